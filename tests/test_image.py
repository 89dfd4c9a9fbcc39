"""The runtime image, built and run as a container (Docker where an engine answers, else podman).

Static checks first (fast). Then, marked slow: build it with .ci/build-image.sh (what `make image`
runs; local stand-in base images when no registry answers), register a quick model in the local
platform (LocalStack S3 + MLflow), lay the version out the way KServe's storage initializer does
(kserve_storage.Storage.download of the registry's s3:// download URI) and mount it read-only at
/mnt/models; run the image as the ClusterServingRuntime says, its securityContext and volumes read
from the manifest (uid 10001, read-only root filesystem, tmpfs /tmp, all capabilities dropped, no
privilege escalation); call it with tritonclient over REST and gRPC and compare with the pyfunc
loaded in this process; SIGTERM it with requests in flight.

Cost (2 cores, shared): cold ~4 min (stand-in bases ~1.5 min, image ~2 min), warm ~1 min.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "serving" / "Dockerfile"
MODEL = "rossmann"
TAG = "localhost/sluice-runtime:pytest"
RUNTIME_UID = 10001
GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds; the runtime sets none
LOCK_LABEL = "dev.sluice.uv-lock.sha256"
INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


def _lock() -> dict[str, Any]:
    return tomllib.loads((ROOT / "uv.lock").read_text())


def _uv() -> list[str]:
    exe = shutil.which("uv")
    return [exe] if exe else [sys.executable, "-m", "uv"]


# --- static: fast ----------------------------------------------------------------------------------


def test_dockerfile_uv_version_is_the_locked_one() -> None:
    [uv] = [p for p in _lock()["package"] if p["name"] == "uv"]
    match = re.search(r"^ARG UV_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match and match.group(1) == uv["version"]


def test_bind_mount_targets_are_absolute() -> None:
    # buildah 1.28 (Debian's podman) rejects relative targets that BuildKit accepts.
    targets = re.findall(r"--mount=[^ ]*?target=([^, ]+)", DOCKERFILE.read_text())
    assert targets, "the Dockerfile mounts the lock file and a uv cache"
    assert all(t.startswith("/") for t in targets), targets


def test_runtime_group_has_the_versions_training_uses() -> None:
    """The image installs `uv sync --only-group runtime`: the same pins as this (training) env."""
    proc = subprocess.run(
        [*_uv(), "export", "--frozen", "--only-group", "runtime", "--no-hashes", "--no-annotate", "--no-header"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    pins: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if "==" not in line or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():  # this platform's packages (no colorama on Linux)
            pins[req.name] = str(req.specifier).removeprefix("==")
    assert {"kserve", "mlflow-skinny", "xgboost-cpu", "pandas", "holidays"} <= set(pins)
    assert pins["mlflow-skinny"] == installed_version("mlflow"), "mlflow-skinny must be the locked mlflow's own"
    skewed = {n: (v, installed_version(n)) for n, v in pins.items() if installed_version(n) != v}
    assert not skewed


def test_build_context_is_the_lock_file_and_serving_only() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!uv.lock", "!pyproject.toml", "!serving/"} <= set(lines)
    assert "COPY model" not in DOCKERFILE.read_text()  # the model's code travels with the model


# --- the image workflow and its scripts: fast --------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "image.yml"


def _workflow() -> dict[Any, Any]:
    import yaml

    return dict(yaml.safe_load(WORKFLOW.read_text()))


def test_image_workflow_matches_the_github_schema() -> None:
    exe = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_workflow_publishes_labelled_and_commits_the_reference() -> None:
    doc = _workflow()
    triggers = doc.get("on") or doc[True]  # PyYAML reads the bare key `on` as True
    assert {"serving/**", "uv.lock", "pyproject.toml"} <= set(triggers["push"]["paths"])
    assert {"pipelines/**", "model/**"} <= set(triggers["push"]["paths"])  # the pipelines image's code
    [job] = doc["jobs"].values()
    assert job["permissions"] == {"contents": "write", "packages": "write"}
    # One job per image, each Dockerfile the one the tests build.
    matrix = {m["image"]: m["dockerfile"] for m in job["strategy"]["matrix"]["include"]}
    assert matrix == {
        "sluice-runtime": "serving/Dockerfile",
        "sluice-inference-log": "serving/inference_log/Dockerfile",
        "sluice-pipelines": "pipelines/Dockerfile",
    }
    steps = {s.get("name", s.get("uses", "")): s for s in job["steps"]}
    build = steps["Build (and on main, push)"]["with"]
    assert build["file"] == "${{ matrix.dockerfile }}" and build["context"] == "."
    assert build["build-args"] == "UV_LOCK_SHA256=${{ steps.meta.outputs.lock_sha256 }}"
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert "sbom" in build and "provenance" in build
    update = steps["Point gitops/ at the new image"]
    assert update["if"] == "env.PUBLISH == 'true'"
    assert '.ci/set-image.sh "$REFERENCE"' in update["run"] and "git push origin HEAD:main" in update["run"]


def test_image_workflow_run_steps_pass_shellcheck(tmp_path: Path) -> None:
    exe = shutil.which("shellcheck")
    if not exe:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    for index, step in enumerate(next(iter(_workflow()["jobs"].values()))["steps"]):
        if "run" in step:
            script = tmp_path / f"step-{index}.sh"
            script.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + re.sub(r"\$\{\{.*?\}\}", "X", step["run"]))
            proc = subprocess.run([exe, str(script)], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stdout


def test_image_tags_name_version_lock_hash_and_commit() -> None:
    import hashlib

    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "image-tags.sh"), "ghcr.io/Sluice-Dev/sluice-runtime"], capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and "<<" not in line)
    lock = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out["lock_sha256"] == lock and out["version"] == version
    assert out["local"] == f"ghcr.io/sluice-dev/sluice-runtime:{version}-{lock[:12]}"
    assert re.fullmatch(re.escape(out["local"]) + r"-[0-9a-f]{7}", out["reference"])
    tags = proc.stdout.split("tags<<EOF\n", 1)[1].split("\nEOF", 1)[0].splitlines()
    assert tags == [f"ghcr.io/sluice-dev/sluice-runtime:{version}", out["local"], out["reference"]]
    # .ci/kind-e2e.sh builds the gitops/ reference as a tag: a plain name:tag, no digest.
    assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", out["reference"])


def test_set_image_rewrites_only_the_image_lines_of_that_image(tmp_path: Path) -> None:
    import yaml

    platform = ROOT / "gitops" / "platform"
    copy = tmp_path / "platform"
    shutil.copytree(platform, copy)
    files = sorted(str(p) for p in copy.glob("*.yaml"))
    script = str(ROOT / ".ci" / "set-image.sh")
    new = "ghcr.io/sluice-dev/sluice-runtime:0.2.0-0123456789ab-abcdef0"
    proc = subprocess.run(["bash", script, new, *files], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    changed = {}
    for path in sorted(copy.glob("*.yaml")):
        before, after = (platform / path.name).read_text().splitlines(), path.read_text().splitlines()
        changed[path.name] = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert {k for k, v in changed.items() if v} == {"clusterservingruntime.yaml"}
    [(_, line)] = changed["clusterservingruntime.yaml"]
    assert line.strip() == f"image: {new}"
    assert yaml.safe_load((copy / "clusterservingruntime.yaml").read_text())["spec"]["containers"][0]["image"] == new
    # The pipelines image is named by three containers in two files: all of them follow.
    pipelines = "ghcr.io/sluice-dev/sluice-pipelines:0.2.0-0123456789ab-abcdef0"
    proc = subprocess.run(["bash", script, pipelines, *files], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sum(p.read_text().count(pipelines) for p in copy.glob("*.yaml")) == 3
    assert proc.stdout.count(pipelines) == 2  # console.yaml and jobs.yaml
    for bad, code, why in (("not an image", 2, "not an image reference"), ("ghcr.io/x/other:1", 1, "no image: line")):
        kept = {p.name: p.read_text() for p in copy.glob("*.yaml")}
        out = subprocess.run(["bash", script, bad, *files], capture_output=True, text=True, timeout=60)
        assert out.returncode == code and why in out.stderr
        assert {p.name: p.read_text() for p in copy.glob("*.yaml")} == kept


# --- the container ---------------------------------------------------------------------------------


@dataclass
class Engine:
    exe: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env}
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.exe} {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
        return proc


def _engine() -> Engine | None:
    forced = os.environ.get("SLUICE_IMAGE_ENGINE")
    docker = shutil.which("docker")
    if forced in (None, "docker") and docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return Engine(docker)
    podman = shutil.which("podman")
    if forced in (None, "podman") and podman:
        conf = os.environ.get("CONTAINERS_CONF") or (
            str(ROOT / ".ci" / "containers.conf") if shutil.which("runc") else ""
        )
        return Engine(podman, {"CONTAINERS_CONF": conf} if conf else {})
    return None


@pytest.fixture(scope="module")
def engine() -> Engine:
    found = _engine()
    if found is None:
        pytest.skip("no container engine: no Docker engine answers and podman is not installed (.ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    started = time.monotonic()
    env = {**os.environ, **engine.env, "SLUICE_IMAGE_ENGINE": Path(engine.exe).name}
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image.sh"), TAG], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    print(f"\nimage {TAG} built in {time.monotonic() - started:.1f} s")
    return TAG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Registered:
    version: str
    model_dir: Path  # laid out as the storage initializer lays out /mnt/models
    rows: pd.DataFrame
    expected: np.ndarray  # the pyfunc's own predictions, FP32 as on the wire


@pytest.fixture(scope="module")
def registered(platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    import mlflow.pyfunc
    from kserve_storage import Storage

    from model.registry import log_and_register
    from model.schema import INPUT_COLUMNS
    from model.synthetic import generate
    from model.training import TrainConfig, train

    raw = generate(stores=10, days=120, seed=5)
    trained = train(raw, TrainConfig.quick(), progress=False)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**platform.aws_env(), "MLFLOW_TRACKING_URI": platform.tracking_uri}.items():
            mp.setenv(key, value)
        reg = log_and_register(trained, "rossmann-image")
        assert reg is not None and reg.download_uri.startswith("s3://"), reg
        model_dir = tmp_path_factory.mktemp("mnt") / "models"
        Storage.download(reg.download_uri, str(model_dir))
    # The initializer's volume is world-readable; pytest's tmp dirs are 0700.
    for path in [model_dir, *model_dir.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | (0o055 if path.is_dir() else 0))
    model_dir.parent.chmod(0o755)
    rows = raw.train[INPUT_COLUMNS].tail(40).assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d"))
    rows = rows.astype({"StateHoliday": str, **dict.fromkeys(INT_COLUMNS, "int64")}).reset_index(drop=True)
    expected = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(rows), dtype=np.float32)
    yield Registered(reg.version, model_dir, rows, expected)


@dataclass
class Container:
    engine: Engine
    name: str
    http_port: int
    grpc_port: int
    ready_seconds: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def logs(self) -> str:
        proc = self.engine("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-4000:]


def runtime_security_flags() -> list[str]:
    """`run` flags for what gitops/platform/clusterservingruntime.yaml asks of the pod, read from it,
    so this container runs exactly as constrained as the manifest says (and fails if that breaks it)."""
    import yaml

    spec = yaml.safe_load((ROOT / "gitops" / "platform" / "clusterservingruntime.yaml").read_text())["spec"]
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    flags = ["--user", f"{ctx['runAsUser']}:{ctx['runAsGroup']}"]
    if ctx.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [
        f for m in container.get("volumeMounts", []) if m["name"] in empty_dirs for f in ("--tmpfs", m["mountPath"])
    ]
    flags += [f for cap in ctx["capabilities"]["drop"] for f in ("--cap-drop", cap)]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}  # the engine's default profile
    return flags


def test_runtime_security_flags_follow_the_manifest() -> None:
    assert runtime_security_flags() == [
        "--user", f"{RUNTIME_UID}:{RUNTIME_UID}", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
    ]  # fmt: skip


@contextmanager
def run_container(
    engine: Engine, image: str, reg: Registered, name: str, env: dict[str, str] | None = None
) -> Iterator[Container]:
    http_port, grpc_port = _free_port(), _free_port()
    engine("rm", "-f", name, check=False)
    started = time.monotonic()
    engine(
        "run", "--detach", "--name", name,
        # What the ClusterServingRuntime and Kubernetes give the pod:
        *runtime_security_flags(),
        "--env", f"SLUICE_MODEL_VERSION={reg.version}",
        *[f"--env={k}={v}" for k, v in (env or {}).items()],
        "--volume", f"{reg.model_dir}:/mnt/models:ro",
        "--publish", f"127.0.0.1:{http_port}:8080", "--publish", f"127.0.0.1:{grpc_port}:8081",
        image,
    )  # fmt: skip
    container = Container(engine, name, http_port, grpc_port, 0.0)
    try:
        deadline = started + 120
        while True:
            try:
                if httpx.get(f"{container.url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            running = engine("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                raise AssertionError(f"container not ready (running={running}):\n{container.logs()}")
            time.sleep(0.1)
        container.ready_seconds = time.monotonic() - started
        print(f"\n{name}: ready {container.ready_seconds:.1f} s after `run`")
        yield container
    finally:
        engine("rm", "-f", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def container(engine: Engine, image: str, registered: Registered) -> Iterator[Container]:
    with run_container(engine, image, registered, "sluice-pytest-serve") as c:
        yield c


def _image_python(engine: Engine, image: str, code: str) -> str:
    return engine("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c", code).stdout


@pytest.mark.slow
@pytest.mark.integration
def test_image_is_labelled_with_the_lock_hash(engine: Engine, image: str) -> None:
    import hashlib

    label = engine("image", "inspect", "--format", f'{{{{ index .Config.Labels "{LOCK_LABEL}" }}}}', image).stdout
    assert label.strip() == hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.integration
def test_image_holds_the_runtime_group_and_nothing_else(engine: Engine, image: str) -> None:
    out = _image_python(
        engine,
        image,
        "import importlib.metadata as m, json, os; "
        "print(json.dumps({'dists': {d.metadata['Name'].lower(): d.version for d in m.distributions()}, "
        "'app': sorted(os.listdir('/app'))}))",
    )
    found = json.loads(out.strip().splitlines()[-1])
    dists = found["dists"]
    # Same versions as the training environment (both come from uv.lock).
    for name in ("kserve", "mlflow-skinny", "xgboost-cpu", "pandas", "numpy", "holidays"):
        assert dists.get(name) == installed_version(name), name
    not_wanted = {"mlflow", "pyarrow", "plotly", "matplotlib", "statsmodels", "evidently", "boto3", "kserve-storage",
                  "scikit-learn",
                  "pytest", "ruff", "mypy", "tritonclient", "pillow", "grpcio-tools", "uv"}  # fmt: skip
    assert not_wanted.isdisjoint(dists), sorted(not_wanted & set(dists))
    assert found["app"] == ["serving"]  # no model/: each version brings its own code


@pytest.mark.slow
@pytest.mark.integration
def test_runs_as_non_root_on_a_read_only_root(container: Container) -> None:
    status = container.engine("exec", container.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids and {int(uids.group(1)), int(uids.group(2))} == {RUNTIME_UID}
    write = container.engine("exec", container.name, "touch", "/opt/venv/written", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    cmdline = container.engine("exec", container.name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[:3] == ["python", "-m", "serving"]


@pytest.mark.slow
@pytest.mark.integration
def test_rest_predictions_equal_the_pyfunc(container: Container, registered: Registered) -> None:
    import tritonclient.http as tc

    client = tc.InferenceServerClient(f"127.0.0.1:{container.http_port}")
    assert client.is_server_live() and client.is_model_ready(MODEL)
    assert client.get_model_metadata(MODEL)["versions"] == [registered.version]
    inputs = []
    for name, (datatype, arr) in _columns(registered.rows).items():
        inp = tc.InferInput(name, [len(arr)], datatype)
        inp.set_data_from_numpy(arr, binary_data=True)
        inputs.append(inp)
    result = client.infer(MODEL, inputs, outputs=[tc.InferRequestedOutput("predictions", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("predictions"), registered.expected)
    assert result.get_response()["model_version"] == registered.version


# tritonclient.grpc and kserve register the same protobuf messages; the client runs in its own process.
GRPC_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as tc
url, columns = sys.argv[1], json.load(sys.stdin)
client = tc.InferenceServerClient(url)
inputs = []
for name, (datatype, values) in columns.items():
    if datatype == "BYTES":
        arr = np.array([v.encode() for v in values], dtype=np.object_)
    else:
        arr = np.array(values, np.int64)
    inp = tc.InferInput(name, [len(arr)], datatype)
    inp.set_data_from_numpy(arr)
    inputs.append(inp)
result = client.infer(sys.argv[2], inputs)
print(json.dumps({"ready": client.is_model_ready(sys.argv[2]), "predictions": result.as_numpy("predictions").tolist(),
                  "model_version": result.get_response().model_version}))
"""


@pytest.mark.slow
@pytest.mark.integration
def test_grpc_predictions_equal_the_pyfunc(container: Container, registered: Registered) -> None:
    columns = {c: (datatype, arr.tolist()) for c, (datatype, arr) in _columns(registered.rows).items()}
    for c, (datatype, values) in columns.items():
        if datatype == "BYTES":
            columns[c] = (datatype, [v.decode() for v in values])
    proc = subprocess.run(
        [sys.executable, "-c", GRPC_CLIENT, f"127.0.0.1:{container.grpc_port}", MODEL],
        input=json.dumps(columns), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ready"] and out["model_version"] == registered.version
    np.testing.assert_array_equal(np.asarray(out["predictions"], dtype=np.float32), registered.expected)


def _columns(rows: pd.DataFrame) -> dict[str, tuple[str, np.ndarray]]:
    out: dict[str, tuple[str, np.ndarray]] = {}
    for c in rows.columns:
        if rows[c].dtype == object:
            out[c] = ("BYTES", np.array([s.encode() for s in rows[c]], dtype=np.object_))
        else:
            out[c] = ("INT64", rows[c].to_numpy(np.int64))
    return out


def _v2_body(rows: pd.DataFrame) -> dict[str, Any]:
    inputs = [
        {"name": c, "datatype": "BYTES" if rows[c].dtype == object else "INT64", "shape": [len(rows)],
         "data": rows[c].tolist()}
        for c in rows.columns
    ]  # fmt: skip
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_finishes_in_flight_requests_within_the_grace_period(
    engine: Engine, image: str, registered: Registered
) -> None:
    # Requests large enough (60,000 rows, a few MB, with the row limit raised for this container) that
    # several are still running in the server when SIGTERM lands: the numpy predict path answers the
    # default limit's 10,000 rows in tens of milliseconds.
    repeat = 1500
    body = _v2_body(pd.concat([registered.rows] * repeat, ignore_index=True))
    expected = np.tile(registered.expected, repeat)
    clients = 6
    results: list[tuple[int, float, np.ndarray | None]] = []
    lock = threading.Lock()
    first_done = threading.Event()

    def call(url: str) -> None:
        try:
            with httpx.Client(timeout=GRACE_SECONDS + 30) as client:  # a connection of its own
                r = client.post(url, json=body)
        except httpx.ConnectError:
            # Not yet connected when the signal landed: refused, never taken in. Acceptable; a request
            # the server took in and then dropped (a read error) is not, and fails the test.
            with lock:
                results.append((0, time.monotonic(), None))
            return
        done = time.monotonic()
        data = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32) if r.status_code == 200 else None
        with lock:
            results.append((r.status_code, done, data))
        first_done.set()

    with run_container(engine, image, registered, "sluice-pytest-sigterm", env={"SLUICE_MAX_ROWS": "100000"}) as c:
        threads = [threading.Thread(target=call, args=(f"{c.url}/v2/models/{MODEL}/infer",)) for _ in range(clients)]
        for t in threads:
            t.start()
        # One answer back means the server has taken the others in and is working through them.
        assert first_done.wait(timeout=120), c.logs()
        engine("kill", "--signal", "TERM", c.name)
        signalled = time.monotonic()
        exit_code = engine("wait", c.name, timeout=GRACE_SECONDS + 30).stdout.strip()
        stopped = time.monotonic() - signalled
        for t in threads:
            t.join(timeout=60)
        logs = c.logs()
    assert len(results) == clients, logs
    answered = [(status, done, data) for status, done, data in results if status != 0]
    assert [status for status, _, _ in answered] == [200] * len(answered), logs
    refused = [done for status, done, _ in results if status == 0]
    assert all(done > signalled for done in refused), "a connection was refused before the signal"
    for _, _, data in answered:
        np.testing.assert_array_equal(data, expected)
    finished_after_signal = sum(done > signalled for _, done, _ in answered)
    assert finished_after_signal >= 1, "no request was in flight at SIGTERM: the test proved nothing"
    assert stopped < GRACE_SECONDS, f"stopped {stopped:.1f} s after SIGTERM"
    assert exit_code == "0", logs
    print(
        f"\nSIGTERM: {finished_after_signal}/{clients} requests finished after the signal, {len(refused)} refused "
        f"(not yet connected); exited in {stopped:.1f} s"
    )


def test_two_workers_in_the_image_sum_their_metrics(engine: Engine, image: str, registered: Registered) -> None:
    """`SLUICE_WORKERS=2` (the release file's `workers: 2`) in the real image: non-root, read-only root,
    the multiprocess metrics in the /tmp emptyDir, one total per scrape, a clean SIGTERM."""
    from prometheus_client.parser import text_string_to_metric_families

    body = _v2_body(registered.rows)
    with run_container(engine, image, registered, "sluice-pytest-workers", env={"SLUICE_WORKERS": "2"}) as c:
        for _ in range(20):
            with httpx.Client(timeout=30) as client:  # a connection each: the kernel spreads them
                r = client.post(f"{c.url}/v2/models/{MODEL}/infer", json=body)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["outputs"][0]["data"], registered.expected, rtol=1e-6)
        for _ in range(5):
            text = httpx.get(f"{c.url}/metrics", timeout=10).text
            ok = sum(
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "sluice_inference_requests_total" and s.labels.get("outcome") == "ok"
            )
            assert ok == 20, text[-2000:]
        engine("kill", "--signal", "TERM", c.name)
        assert engine("wait", c.name, timeout=GRACE_SECONDS + 30).stdout.strip() == "0", c.logs()
        full = engine("logs", c.name, check=False)
        assert "2 workers on 0.0.0.0:8080" in full.stdout + full.stderr
