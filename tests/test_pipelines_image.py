"""The pipelines image (pipelines/Dockerfile) and what runs it in a cluster: the console Deployment and
the scheduled drift and forecast jobs in gitops/platform/.

Fast: the manifests name commands and flags the real `sluice` parser accepts, settings that
pipelines/config.py reads, and the image tag this uv.lock builds. Slow: the image is built with podman
and run as the manifests run it (non-root, read-only root, /state and /tmp on tmpfs) against the
embedded platform: `sluice forecast` writes to S3 from the container, and the console answers its pages.
Cost: ~4 min to build when the uv cache is warm (more on a new machine), ~1 min to run.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from inference_log_helpers import free_port, wait_for
from podman_helpers import answers, build_image, dockerfile_args, podman, removed_after

from pipelines.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "pipelines" / "Dockerfile"
PLATFORM = ROOT / "gitops" / "platform"
TAG = "localhost/sluice-pipelines:pytest"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((PLATFORM / name).read_text()) if d]


def _pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec that runs the pipelines image, by workload name."""
    out = {}
    for name in ("console.yaml", "jobs.yaml"):
        for doc in _docs(name):
            if doc["kind"] == "Deployment":
                out[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
            elif doc["kind"] == "CronJob":
                out[doc["metadata"]["name"]] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def test_the_image_has_the_runtime_images_bases() -> None:
    # Same base images and uv as the runtime image: one set of stand-ins serves every build.
    unpinned = {"UV_LOCK_SHA256": ""}
    assert dockerfile_args(DOCKERFILE) | unpinned == dockerfile_args(ROOT / "serving" / "Dockerfile") | unpinned


def test_manifests_run_real_commands_and_flags() -> None:
    from pipelines.cli import build_parser

    specs = _pod_specs()
    assert set(specs) == {"sluice-console", "sluice-drift", "sluice-forecast"}
    commands = {}
    for name, spec in specs.items():
        (container,) = spec["containers"]
        args = [str(a) for a in container["args"]]
        parsed = build_parser().parse_args(args)  # exits (fails the test) on an unknown flag
        commands[name] = args[0]
        assert callable(parsed.run)
    assert commands == {"sluice-console": "console", "sluice-drift": "drift", "sluice-forecast": "forecast"}


def test_manifests_name_the_image_this_lock_builds() -> None:
    meta = subprocess.run(
        [str(ROOT / ".ci" / "image-tags.sh"), "ghcr.io/sluice-dev/sluice-pipelines"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    local = re.search(r"^local=(\S+)$", meta, flags=re.M)
    assert local is not None
    for name, spec in _pod_specs().items():
        assert spec["containers"][0]["image"] == local.group(1), f"{name}: rebuild and retag after a uv.lock change"


def test_the_config_map_holds_settings_the_code_reads() -> None:
    (config,) = _docs("pipelines-config.yaml")
    read = (ROOT / "pipelines" / "config.py").read_text()
    for key in config["data"]:
        assert f'"{key}"' in read, f"{key} is not read by pipelines/config.py"
    # The console reads the repository ArgoCD syncs.
    (app,) = [d for d in yaml.safe_load_all((ROOT / "argocd" / "apps" / "platform.yaml").read_text()) if d]
    assert config["data"]["SLUICE_GITOPS_REMOTE"] == app["spec"]["source"]["repoURL"]
    assert "{model}" in config["data"]["SLUICE_SERVE_URL"]
    for spec in _pod_specs().values():
        container = spec["containers"][0]
        assert {"configMapRef": {"name": "sluice-pipelines"}} in container["envFrom"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/state", "/tmp"}


# --- built and run (slow) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    return build_image("pipelines/Dockerfile", "sluice-pipelines", TAG, timeout=2400)


def _as_the_manifests_run_it(settings: Settings, extra: dict[str, str]) -> list[str]:
    """podman flags for a pod like console.yaml's, on the host network to reach the embedded platform."""
    env = {
        **settings.aws_env(),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "SLUICE_MODELS_BUCKET": settings.models_bucket,
        "SLUICE_DATA_BUCKET": settings.data_bucket,
        "SLUICE_S3_PORT": str(settings.s3_port),
        **extra,
    }
    return [
        "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--tmpfs", "/state:rw,mode=1777",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        *[a for k, v in env.items() for a in ("--env", f"{k}={v}")],
    ]  # fmt: skip


@pytest.fixture
def container_name() -> Iterator[str]:
    with removed_after("sluice-pytest-pipelines") as name:
        yield name


@pytest.mark.slow
@pytest.mark.integration
def test_the_forecast_job_writes_to_s3_from_the_container(image: str, platform_env: Settings) -> None:
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.registry import s3_client

    model = f"rossmann-jobs-{uuid.uuid4().hex[:6]}"
    raw = generate(stores=4, days=200, seed=5)
    assert log_and_register(train(raw, TrainConfig.quick()), model, alias="champion")
    (cronjob,) = [d for d in _docs("jobs.yaml") if d["metadata"]["name"] == "sluice-forecast"]
    args = [str(a) for a in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]]
    assert "tomorrow" in args  # in production; generated data ends years ago, so the test starts after it
    after = str((raw.last_date + pd.Timedelta(days=1)).date())
    args = [{"rossmann": model, "tomorrow": after}.get(a, a) for a in args]
    out = f"s3://{platform_env.data_bucket}/forecasts/{model}/"
    args = [a.replace("s3://sluice-data/forecasts/rossmann/", out) for a in args]
    proc = podman("run", "--rm", *_as_the_manifests_run_it(platform_env, {}), image, *args, timeout=600)
    assert "forecasts" in proc.stdout, proc.stderr[-3000:]
    listing = s3_client(platform_env).list_objects_v2(Bucket=platform_env.data_bucket, Prefix=f"forecasts/{model}/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert keys == [f"forecasts/{model}/{after}.parquet"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_console_serves_from_the_container(image: str, platform: Settings, container_name: str) -> None:
    remote = platform.gitops_remote_path
    assert remote is not None
    port = free_port()
    extra = {
        "SLUICE_GITOPS_REMOTE": str(remote),
        "SLUICE_SERVE_URL": f"http://127.0.0.1:{platform.serve_port}",  # the stand-in's ingress for every model
        "PROMETHEUS_URL": platform.metrics_url,
        # The remote belongs to the host's user; the pod's own mirror would belong to the pod's user.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }
    podman(
        "run", "--detach", "--name", container_name, "--volume", f"{remote}:{remote}:ro",
        *_as_the_manifests_run_it(platform, extra), image,
        "console", "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    wait_for(lambda: answers(f"{url}/healthz"), timeout=90, what="the console's /healthz in the container")
    assert podman("exec", container_name, "id", "-u").stdout.strip() == "10001"
    head = subprocess.run(["git", "-C", str(remote), "rev-parse", platform.gitops_branch], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    releases = httpx.get(f"{url}/releases", timeout=60)
    assert releases.status_code == 200 and "rossmann" in releases.text
    assert head[:7] in releases.text, "the page does not show the remote's head: git was not read in the container"
    assert httpx.get(f"{url}/forecast?store=abc", timeout=30).status_code == 400
    podman("stop", "--time", "20", container_name)
