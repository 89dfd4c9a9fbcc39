"""The inference-log receiver's image: static checks (fast), then built and run as a container (slow).

The container runs as gitops/platform/inference-log.yaml runs it: non-root, read-only root
filesystem, the spool and /tmp on tmpfs, all capabilities dropped; host networking so it reaches the
platform's LocalStack on 127.0.0.1. Cost: ~30 s to build on warm stand-in base images (those of
tests/test_image.py, ~1.5 min more when cold), ~10 s to run.
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from inference_log_helpers import event, free_port, request_body, response_body, rows, wait_for
from podman_helpers import answers, build_image, dockerfile_args, podman, removed_after

from pipelines.config import Settings
from pipelines.registry import s3_client

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "serving" / "inference_log" / "Dockerfile"
TAG = "localhost/sluice-inference-log:pytest"


def test_the_image_has_the_runtime_images_bases_and_runs_the_tested_command() -> None:
    # Same base images and uv as the runtime image: one set of stand-ins serves both builds.
    unpinned = {"UV_LOCK_SHA256": ""}
    assert dockerfile_args(DOCKERFILE) | unpinned == dockerfile_args(ROOT / "serving" / "Dockerfile") | unpinned
    [cmd] = [json.loads(line[4:]) for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert cmd == ["python", "-m", "serving.inference_log"]  # what inference_log_helpers.run_receiver starts
    assert "uv sync --frozen --only-group inference-log" in DOCKERFILE.read_text()


def test_the_dependency_group_has_what_the_receiver_imports() -> None:
    group = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["inference-log"]
    names = {re.split(r"[<>=\[ ]", req, maxsplit=1)[0] for req in group}
    imported: set[str] = set()
    for path in (ROOT / "serving" / "inference_log").glob("*.py"):
        if path.name == "reader.py":  # pandas, for the drift code; not the receiver's
            continue
        imported |= set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), flags=re.M))
    third_party = {m for m in imported if m not in {"serving", "__future__"} and not _stdlib(m)}
    to_package = {"prometheus_client": "prometheus-client", "botocore": "boto3"}
    assert {to_package.get(m, m) for m in third_party} <= names, third_party


def _stdlib(module: str) -> bool:
    import sys

    return module in sys.stdlib_module_names


# --- built and run (slow) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    return build_image("serving/inference_log/Dockerfile", "sluice-inference-log", TAG, timeout=1500)


@pytest.fixture
def container_name() -> Iterator[str]:
    with removed_after("sluice-pytest-inference-log") as name:
        yield name


@pytest.mark.slow
@pytest.mark.integration
def test_the_image_stores_events_in_s3_as_non_root_on_a_read_only_root(
    image: str, platform: Settings, container_name: str
) -> None:
    modules = "import sys, serving.inference_log.server, pyarrow as pa; pa.array([1]); print(sorted(sys.modules))"
    assert "pandas" not in podman("run", "--rm", "--entrypoint", "python", image, "-c", modules).stdout
    port = free_port()
    model = f"rossmann-image-{uuid.uuid4().hex[:6]}"
    env = {
        **platform.aws_env(),
        "SLUICE_DATA_BUCKET": platform.data_bucket,
        "SLUICE_INFERENCE_LOG_HOST": "127.0.0.1",
        "SLUICE_INFERENCE_LOG_PORT": str(port),
        "SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "0.3",
    }
    podman(
        "run", "--detach", "--name", container_name, "--network", "host",
        # What the Deployment gives the pod:
        "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/spool:rw,mode=1777,size=64m",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        *[a for k, v in env.items() for a in ("--env", f"{k}={v}")],
        image,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    wait_for(lambda: answers(f"{url}/readyz", timeout=1), timeout=60, what="the container's /readyz")
    assert podman("exec", container_name, "id", "-u").stdout.strip() == "10001"
    data = rows(5)
    for kind, body in (("request", request_body(data)), ("response", response_body(data))):
        headers, content = event(kind, "img-1", body, model=model)  # type: ignore[arg-type]
        assert httpx.post(f"{url}/", headers=headers, content=content, timeout=10).status_code == 200
    s3 = s3_client(platform)

    def stored() -> int:
        listing = s3.list_objects_v2(Bucket=platform.data_bucket, Prefix=f"inference-log/model={model}/")
        return len(listing.get("Contents", []))

    wait_for(lambda: stored() == 1, timeout=30, what="the Parquet file in S3")
    podman("stop", "--time", "30", container_name)
    state = json.loads(podman("inspect", "--format", "{{json .State}}", container_name).stdout)
    assert state["ExitCode"] == 0, podman("logs", container_name, check=False).stderr[-3000:]
