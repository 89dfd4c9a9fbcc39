"""The local platform behind `sluice up|down|status`: LocalStack S3, terraform/storage and MLflow.

Everything runs as plain host processes (no container engine here): LocalStack in a virtualenv of
its own under the state dir (its pins clash with mlflow and kserve), the MLflow tracking server from
this project's virtualenv. Both are started detached in their own process group, with a pid file and
a log file under `<state_dir>/logs/`, so `sluice down` can stop them from another shell.

LocalStack community keeps S3 in memory only: `PERSISTENCE=1` is a Pro feature and has no effect in
4.9.2 (checked: buckets and objects are gone after a restart). `up` therefore re-applies terraform
(which re-creates missing buckets) and `status` reports registered versions whose artifacts vanished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import REPO_ROOT, Settings

STORAGE_STACK = REPO_ROOT / "terraform" / "storage"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"

# localstack-core's metadata lacks these upper bounds; without them 4.9.2 fails to start on 3.11:
# cbor2/pyopenssl/cryptography break its imports, localstack-twisted>=26 imports service_identity
# without depending on it, and psutil>=7.2 dropped a name its DNS module imports.
LOCALSTACK_EXTRA_PINS = ("cbor2<5.7", "pyopenssl<24.3", "cryptography<44", "service-identity", "psutil<7.2")

LOCALSTACK_START_TIMEOUT = 120.0
MLFLOW_START_TIMEOUT = 180.0  # the first start creates and migrates the SQLite schema
STOP_TIMEOUT = 20.0
# One worker: a SQLite backend serialises writes anyway, and each worker costs ~300 MB on 2 cores.
MLFLOW_WORKERS = "1"

Echo = Callable[[str], None]


class PlatformError(RuntimeError):
    """A failure whose message already says what to do next."""


# --- paths and small helpers ---------------------------------------------------------------------


def localstack_venv(settings: Settings) -> Path:
    return settings.state_dir / "localstack-venv"


def pid_file(settings: Settings, service: str) -> Path:
    return settings.logs_dir / f"{service}.pid"


def log_file(settings: Settings, service: str) -> Path:
    return settings.logs_dir / f"{service}.log"


def localstack_url(settings: Settings) -> str:
    return f"http://{settings.s3_host}:{settings.s3_port}"


def mlflow_url(settings: Settings) -> str:
    return f"http://{settings.mlflow_host}:{settings.mlflow_port}"


def manages_localstack(settings: Settings) -> bool:
    """False when S3 is real AWS (SLUICE_S3_ENDPOINT_OVERRIDE=0) or another endpoint
    (MLFLOW_S3_ENDPOINT_URL elsewhere, e.g. a shared S3 in CI): then there is nothing to start."""
    endpoint = settings.s3_endpoint_url
    return endpoint is not None and endpoint.rstrip("/") == localstack_url(settings)


def manages_mlflow(settings: Settings) -> bool:
    """False when MLFLOW_TRACKING_URI points at a server other than the one we would start."""
    return settings.tracking_uri.rstrip("/") == mlflow_url(settings)


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """Status and body, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), b""
    except (OSError, ValueError):
        return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- processes -----------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        # Reap it if it is our own exited child: a zombie still answers kill(pid, 0).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_is(pid: int, marker: str) -> bool:
    """Guard against pid reuse after a reboot: the command line must still mention the service."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # not Linux: trust the pid file
        return True
    try:
        return marker in cmdline.read_bytes().decode(errors="replace")
    except OSError:
        return False


def running_pid(settings: Settings, service: str) -> int | None:
    """Pid from the service's pid file if that process is still alive; removes stale pid files."""
    path = pid_file(settings, service)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _pid_is(pid, service):
        return pid
    path.unlink(missing_ok=True)
    return None


def start_detached(settings: Settings, service: str, cmd: list[str], env: Mapping[str, str]) -> int:
    """Start `cmd` in its own session (survives this shell, stoppable as a group); returns its pid."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = log_file(settings, service)
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.state_dir,
            start_new_session=True,
        )
    pid_file(settings, service).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_service(settings: Settings, service: str, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the service's process group, SIGKILL it after `timeout`. Returns the pid it stopped."""
    pid = running_pid(settings, service)
    if pid is None:
        pid_file(settings, service).unlink(missing_ok=True)
        return None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Kill the group even if the leader is gone: workers (uvicorn) may outlive it.
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    pid_file(settings, service).unlink(missing_ok=True)
    return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session made pid the group leader
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_until(
    check: Callable[[], bool], *, service: str, settings: Settings, pid: int | None, timeout: float
) -> float:
    """Poll `check` until true; fail early if the process died. Returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        if pid is not None and not _pid_alive(pid):
            log = log_file(settings, service)
            raise PlatformError(
                f"{service} exited during startup. Last lines of {log}:\n{_tail(log)}\n"
                f"Fix the cause shown above, then run `sluice up` again."
            )
        time.sleep(0.25)
    log = log_file(settings, service)
    raise PlatformError(
        f"{service} did not become healthy within {timeout:.0f}s. Look at {log}:\n{_tail(log)}\n"
        f"Then `sluice down` and `sluice up` again."
    )


# --- LocalStack ----------------------------------------------------------------------------------


def localstack_requirements(settings: Settings) -> list[str]:
    return [f"localstack-core[runtime]=={settings.localstack_version}", *LOCALSTACK_EXTRA_PINS]


def _uv() -> str:
    """uv on PATH, else the binary of the `uv` package in this environment (a dev dependency: on a
    new machine `make setup` may have reached uv as `python3 -m uv`, with no script on PATH)."""
    uv = shutil.which("uv")
    if uv is not None:
        return uv
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        raise PlatformError("`uv` is not on PATH; install it (https://docs.astral.sh/uv/) and retry.") from None


def ensure_localstack_venv(settings: Settings, echo: Echo = print) -> Path:
    """Create or update LocalStack's own virtualenv; returns its python. No-op when up to date."""
    venv = localstack_venv(settings)
    python = venv / "bin" / "python"
    marker = venv / ".sluice-requirements"
    wanted = "\n".join(localstack_requirements(settings)) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    echo(f"localstack: installing {settings.localstack_version} into {venv} (once, ~10 s)")
    uv = _uv()
    if not python.exists():
        _run([uv, "venv", "-q", "-p", "3.11", str(venv)], what="creating LocalStack's virtualenv")
    _run(
        [uv, "pip", "install", "-q", "--python", str(python), *localstack_requirements(settings)],
        what="installing LocalStack",
    )
    marker.write_text(wanted)
    return python


def _run(cmd: list[str], *, what: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    env_ = None if env is None else dict(env)
    proc = subprocess.run(cmd, env=env_, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise PlatformError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out))
    return proc.stdout


def localstack_env(settings: Settings) -> dict[str, str]:
    root = settings.state_dir / "localstack"
    return {
        **os.environ,
        "GATEWAY_LISTEN": f"{settings.s3_host}:{settings.s3_port}",
        # The default twisted server ignores the host in GATEWAY_LISTEN and binds 0.0.0.0 (4.9.2);
        # hypercorn binds the configured interface, so S3 stays on loopback unless asked otherwise.
        "GATEWAY_SERVER": "hypercorn",
        "SERVICES": "s3",
        "LOCALSTACK_VOLUME_DIR": str(root),
        # The machines have /.dockerenv, which makes LocalStack assume a container and write to
        # /var/lib/localstack; force host mode so every file lands under FILESYSTEM_ROOT.
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(root),
        # No DNS server on :53, no telemetry (it shells out to `docker ps`), no certificate download:
        # none is reachable or needed here, and each leaves an error in the log.
        "DNS_ADDRESS": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        # plux (LocalStack's plugin loader) caches entry points per environment in ~/.cache.
        "XDG_CACHE_HOME": str(root / "cache"),
        # Pro-only in 4.9.2 (nothing is saved), kept so a Pro image or later release would persist.
        "PERSISTENCE": "1",
    }


def localstack_healthy(settings: Settings) -> bool:
    got = _http_get(f"{localstack_url(settings)}/_localstack/health")
    if got is None or got[0] != 200:
        return False
    try:
        state = json.loads(got[1]).get("services", {}).get("s3")
    except (ValueError, AttributeError):
        return False
    return state in ("running", "available")


def _start_service(
    settings: Settings,
    service: str,
    *,
    label: str,
    url: str,
    address: tuple[str, int],
    port_env: str,
    healthy: Callable[[], bool],
    launch: Callable[[], tuple[list[str], Mapping[str, str]]],
    timeout: float,
    echo: Echo,
) -> int | None:
    """Start `service` unless it already answers, then wait until healthy; returns its pid.

    `launch` is called only when a process must be started (LocalStack's virtualenv is built there).
    """
    pid = running_pid(settings, service)
    if healthy():
        echo(f"{service}: already running at {url} (pid {pid or 'unknown'})")
        return pid
    host, port = address
    if pid is None and port_in_use(host, port):
        raise PlatformError(
            f"port {port} on {host} is taken by something that is not {label}; "
            f"stop it or set {port_env} to a free port."
        )
    if pid is None:
        cmd, env = launch()
        pid = start_detached(settings, service, cmd, env)
        echo(f"{service}: starting (pid {pid}, log {log_file(settings, service)})")
    took = wait_until(healthy, service=service, settings=settings, pid=pid, timeout=timeout)
    echo(f"{service}: healthy at {url} after {took:.1f}s")
    return pid


def start_localstack(settings: Settings, echo: Echo = print) -> int | None:
    """Start LocalStack S3 unless it already answers; returns its pid (None: not started by us)."""

    def launch() -> tuple[list[str], Mapping[str, str]]:
        python = ensure_localstack_venv(settings, echo)
        return [str(python), "-m", "localstack.runtime.main"], localstack_env(settings)

    return _start_service(
        settings,
        "localstack",
        label="LocalStack",
        url=localstack_url(settings),
        address=(settings.s3_host, settings.s3_port),
        port_env="SLUICE_S3_PORT",
        healthy=lambda: localstack_healthy(settings),
        launch=launch,
        timeout=LOCALSTACK_START_TIMEOUT,
        echo=echo,
    )


# --- terraform -----------------------------------------------------------------------------------


def find_tf_mirror() -> Path | None:
    """Directory holding registry.terraform.io/hashicorp/aws: $SLUICE_TF_MIRROR, else a search."""
    env = os.environ.get("SLUICE_TF_MIRROR")
    if env:
        return Path(env)
    candidates = [
        Path("/opt/tf-plugins"),
        Path.home() / ".terraform.d" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    for c in candidates:
        if (c / AWS_PROVIDER).is_dir():
            return c
    # Same as `find / -maxdepth 4 -name registry.terraform.io`, without walking the whole disk.
    for pattern in ("*/registry.terraform.io", "*/*/registry.terraform.io", "*/*/*/registry.terraform.io"):
        for hit in Path("/").glob(pattern):
            if (hit / "hashicorp" / "aws").is_dir():
                return hit.parent
    return None


def write_terraform_cli_config(settings: Settings) -> Path:
    """A CLI config that takes the aws provider from the mirror (the registry may be out of reach)."""
    path = settings.state_dir / "terraform" / "terraformrc"
    path.parent.mkdir(parents=True, exist_ok=True)
    mirror = find_tf_mirror()
    if mirror is None:
        # No mirror: plain registry installation, as on any machine with internet access.
        text = "# no filesystem mirror found: providers come from the registry\n"
    else:
        text = (
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {json.dumps(str(mirror))}\n"
            f'    include = ["{AWS_PROVIDER}"]\n'
            "  }\n"
            "  direct {\n"
            f'    exclude = ["{AWS_PROVIDER}"]\n'
            "  }\n"
            "}\n"
        )
    path.write_text(text)
    return path


def terraform_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **settings.aws_env(),
        "TF_CLI_CONFIG_FILE": str(write_terraform_cli_config(settings)),
        # .terraform/ (providers, backend config) goes to the state dir, not into the repository.
        "TF_DATA_DIR": str(settings.state_dir / "terraform" / "storage-data"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }


def terraform_vars(settings: Settings) -> list[str]:
    values = {
        "region": settings.aws_region,
        "s3_endpoint": settings.s3_endpoint_url or "",
        "models_bucket": settings.models_bucket,
        "data_bucket": settings.data_bucket,
    }
    return [arg for k, v in values.items() for arg in ("-var", f"{k}={v}")]


def _terraform() -> str:
    tf = shutil.which("terraform")
    if tf is None:
        raise PlatformError("`terraform` is not on PATH; install Terraform >= 1.5 and retry.")
    return tf


def apply_storage(settings: Settings, echo: Echo = print) -> dict[str, str]:
    """`terraform init` + `apply` of terraform/storage; returns its outputs (bucket names)."""
    tf = _terraform()
    env = terraform_env(settings)
    state = settings.state_dir / "terraform" / "storage.tfstate"
    chdir = f"-chdir={STORAGE_STACK}"
    echo(f"terraform: init {STORAGE_STACK.relative_to(REPO_ROOT)} (state {state})")
    _run(
        [tf, chdir, "init", "-input=false", "-no-color", f"-backend-config=path={state}", "-reconfigure"],
        what="terraform init",
        env=env,
    )
    echo(f"terraform: apply (s3 endpoint {settings.s3_endpoint_url or 'AWS'})")
    out = _run(
        [tf, chdir, "apply", "-auto-approve", "-input=false", "-no-color", *terraform_vars(settings)],
        what="terraform apply",
        env=env,
    )
    summary = next((ln for ln in out.splitlines() if ln.startswith(("Apply complete", "No changes"))), "")
    echo(f"terraform: {summary or 'applied'}")
    raw = json.loads(_run([tf, chdir, "output", "-json", "-no-color"], what="terraform output", env=env))
    return {k: str(v["value"]) for k, v in raw.items()}


# --- MLflow --------------------------------------------------------------------------------------


def mlflow_command(settings: Settings) -> list[str]:
    sibling = Path(sys.executable).with_name("mlflow")
    base = [str(sibling)] if sibling.exists() else [sys.executable, "-m", "mlflow"]
    db = settings.state_dir / "mlflow" / "mlflow.db"
    return [
        *base,
        "server",
        "--host",
        settings.mlflow_host,
        "--port",
        str(settings.mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{db}",
        # Clients write to S3 themselves, so version URIs are s3:// paths KServe can download.
        "--no-serve-artifacts",
        "--default-artifact-root",
        settings.artifact_root,
        "--workers",
        MLFLOW_WORKERS,
    ]


def mlflow_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **settings.aws_env(),
        # The job runner (GenAI scorers, prompt optimisation) forks 7 huey consumers: ~1 GB of memory
        # and ~30 s of startup that a tabular-model registry does not need.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def mlflow_healthy(settings: Settings) -> bool:
    got = _http_get(f"{mlflow_url(settings)}/health")
    return got is not None and got[0] == 200


def start_mlflow(settings: Settings, echo: Echo = print) -> int | None:
    """Start the MLflow tracking server unless it already answers; returns its pid."""

    def launch() -> tuple[list[str], Mapping[str, str]]:
        (settings.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        return mlflow_command(settings), mlflow_env(settings)

    return _start_service(
        settings,
        "mlflow",
        label="MLflow",
        url=mlflow_url(settings),
        address=(settings.mlflow_host, settings.mlflow_port),
        port_env="SLUICE_MLFLOW_PORT",
        healthy=lambda: mlflow_healthy(settings),
        launch=launch,
        timeout=MLFLOW_START_TIMEOUT,
        echo=echo,
    )


# --- S3 and the registry -------------------------------------------------------------------------


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
        config=Config(
            s3={"addressing_style": "path" if settings.s3_endpoint_override else "auto"},
            retries={"max_attempts": 2},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


@dataclass(frozen=True)
class BucketState:
    name: str
    exists: bool
    versioning: str  # "Enabled", "Suspended", "-" (never enabled) or "?" when unknown


def bucket_states(settings: Settings) -> list[BucketState]:
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = s3_client(settings)
    states = []
    for name in (settings.models_bucket, settings.data_bucket):
        try:
            s3.head_bucket(Bucket=name)
        except ClientError:
            states.append(BucketState(name, False, "?"))
            continue
        except BotoCoreError:
            states.append(BucketState(name, False, "?"))
            continue
        try:
            versioning = s3.get_bucket_versioning(Bucket=name).get("Status") or "-"
        except (ClientError, BotoCoreError):
            versioning = "?"
        states.append(BucketState(name, True, versioning))
    return states


@dataclass(frozen=True)
class ArtifactCheck:
    model: str
    version: str
    aliases: tuple[str, ...]
    uri: str
    ok: bool | None  # None: not an s3:// URI, cannot check
    detail: str


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def s3_prefix_has_objects(s3: Any, uri: str) -> bool:
    from botocore.exceptions import ClientError

    bucket, key = _split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    try:
        resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchBucket", "404"):
            return False
        raise
    return int(resp.get("KeyCount", 0)) > 0


def check_registry_artifacts(settings: Settings) -> list[ArtifactCheck]:
    """For every registered model version: do the objects under its download URI exist in S3?"""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    s3 = s3_client(settings)
    checks: list[ArtifactCheck] = []
    for model in client.search_registered_models():
        aliases_of: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases_of.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name='{model.name}'"):
            uri = client.get_model_version_download_uri(model.name, mv.version)
            aliases = tuple(sorted(aliases_of.get(str(mv.version), [])))
            if not uri.startswith("s3://"):
                checks.append(ArtifactCheck(model.name, str(mv.version), aliases, uri, None, "not in S3"))
                continue
            present = s3_prefix_has_objects(s3, uri)
            detail = "ok" if present else "MISSING"
            checks.append(ArtifactCheck(model.name, str(mv.version), aliases, uri, present, detail))
    return sorted(checks, key=lambda c: (c.model, int(c.version) if c.version.isdigit() else 0))


# --- stop ----------------------------------------------------------------------------------------


def stop_all(settings: Settings, echo: Echo = print) -> dict[str, int | None]:
    """Stop MLflow first (it is a client of S3), then LocalStack. Returns the pids stopped."""
    stopped: dict[str, int | None] = {}
    for service, url in (("mlflow", mlflow_url(settings)), ("localstack", localstack_url(settings))):
        pid = stop_service(settings, service)
        stopped[service] = pid
        if pid is not None:
            echo(f"{service}: stopped (pid {pid})")
        else:
            echo(f"{service}: not running (no live pid in {pid_file(settings, service)})")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        if port_in_use(host, int(port)):
            echo(f"{service}: warning: {url} still answers; it was not started by `sluice up` here")
    return stopped


# --- command handlers ----------------------------------------------------------------------------


def platform_up(settings: Settings, echo: Echo = print) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    if manages_localstack(settings):
        start_localstack(settings, echo)
    else:
        echo(f"localstack: skipped (S3 is {settings.s3_endpoint_url or 'real AWS'}, not a local LocalStack)")
    outputs = apply_storage(settings, echo)
    echo(f"buckets: {', '.join(sorted(outputs.values()))}")
    if manages_mlflow(settings):
        start_mlflow(settings, echo)
    else:
        echo(f"mlflow: skipped (MLFLOW_TRACKING_URI={settings.tracking_uri} is not this machine's server)")


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    try:
        platform_up(settings)
    except PlatformError as e:
        print(f"sluice up: {e}", file=sys.stderr)
        return 1
    s3 = settings.s3_endpoint_url or "AWS"
    print(f"platform is up. MLFLOW_TRACKING_URI={settings.tracking_uri}  S3={s3}")
    print("next: `sluice train` (make train), `sluice status` to check, `sluice down` to stop")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = stop_all(settings)
    if stopped.get("localstack") is not None:
        print("LocalStack's S3 objects are gone (community edition keeps them in memory); the MLflow")
        print("registry is kept: after `sluice up`, `sluice status` lists versions that need retraining")
    print("platform is down")
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    problems: list[str] = []
    services = [["SERVICE", "URL", "PID", "HEALTHY"]]
    ls_ok = localstack_healthy(settings)
    ml_ok = mlflow_healthy(settings)
    svc: list[tuple[str, str, bool | None]] = [
        # External S3 / tracking servers are not ours to check beyond the calls below.
        ("localstack", localstack_url(settings), ls_ok if manages_localstack(settings) else None),
        ("mlflow", settings.tracking_uri, ml_ok if manages_mlflow(settings) else None),
    ]
    for name, url, ok in svc:
        if ok is None:
            shown = (settings.s3_endpoint_url or "AWS") if name == "localstack" else url
            services.append([name, shown, "-", "external"])
            continue
        services.append([name, url, str(running_pid(settings, name) or "-"), "yes" if ok else "NO"])
        if not ok:
            problems.append(f"{name} is not healthy at {url}: run `sluice up` (make up); logs in {settings.logs_dir}")
    print(_table(services))

    s3_ok = ls_ok or not manages_localstack(settings)
    if s3_ok:
        print()
        buckets = [["BUCKET", "EXISTS", "VERSIONING"]]
        for b in bucket_states(settings):
            buckets.append([b.name, "yes" if b.exists else "NO", b.versioning])
            if not b.exists:
                problems.append(f"bucket {b.name} is missing: run `sluice up` (re-applies terraform/storage)")
        print(_table(buckets))

    if s3_ok and (ml_ok or not manages_mlflow(settings)):
        print()
        checks = check_registry_artifacts(settings)
        if not checks:
            print("no registered model versions yet: `sluice train` (make train) registers one")
        else:
            rows = [["MODEL", "VERSION", "ALIASES", "ARTIFACTS", "URI"]]
            rows += [[c.model, c.version, ",".join(c.aliases) or "-", c.detail, c.uri] for c in checks]
            print(_table(rows))
        missing = [c for c in checks if c.ok is False]
        if missing:
            names = ", ".join(f"{c.model} v{c.version}" for c in missing)
            problems.append(
                f"artifacts of {names} are gone from S3 (LocalStack lost them on restart, or they were "
                "deleted): retrain with `make train` (sluice train) and move aliases to the new version; "
                "do not promote the missing versions"
            )

    if problems:
        print()
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        return 1
    return 0
