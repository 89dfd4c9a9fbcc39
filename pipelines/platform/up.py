"""`sluice up|down|status`: the embedded platform as one thing to start, stop and look at.

Up, in order: LocalStack S3 -> terraform/storage -> MLflow -> Pushgateway -> Prometheus -> the
inference-log receiver -> the GitOps remote (bare repository with hooks) -> the CI runner -> the
cluster stand-in -> the read-only web console. Each step is skipped when its setting points elsewhere (real
AWS, a shared MLflow, a GitHub remote, a cluster's Prometheus), and every step is safe to run twice.
Down stops them in reverse order; state under `.sluice/` is kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from pipelines.config import Settings
from pipelines.platform import (
    ci_queue,
    console,
    gitserver,
    inference_log,
    localstack,
    mlflow_server,
    prometheus,
    pushgateway,
    s3_mirror,
    terraform,
)
from pipelines.platform.processes import (
    Echo,
    PlatformError,
    http_get,
    log_file,
    pid_file,
    port_in_use,
    running_pid,
    start_detached,
    stop_service,
    wait_until,
)

RUNNER, STANDIN = "runner", "standin"
STANDIN_START_TIMEOUT = 60.0


def _service_env(settings: Settings) -> dict[str, str]:
    import os

    return {**os.environ, **gitserver.settings_env(settings)}


def start_runner(settings: Settings, echo: Echo = print) -> int | None:
    if settings.gitops_remote_path is None:
        echo("runner: not started (the GitOps remote is not local: its own CI runs the workflows)")
        return None
    pid = running_pid(settings, RUNNER)
    if pid is not None:
        echo(f"runner: already running (pid {pid})")
        return pid
    pid = start_detached(settings, RUNNER, [sys.executable, "-m", "pipelines.platform.runner"], _service_env(settings))
    queued = len(ci_queue.pending(settings)) + len(ci_queue.running(settings))
    echo(f"runner: started (pid {pid}, log {log_file(settings, RUNNER)}); {queued} job(s) waiting")
    return pid


def standin_healthy(settings: Settings) -> bool:
    got = http_get(f"{settings.serve_url}/v2/health/live")
    return got is not None and got[0] == 200


def start_standin(settings: Settings, echo: Echo = print) -> int | None:
    pid = running_pid(settings, STANDIN)
    if pid is not None and standin_healthy(settings):
        echo(f"standin: already running at {settings.serve_url} (pid {pid})")
        return pid
    if pid is None and port_in_use(settings.serve_host, settings.serve_port):
        raise PlatformError(
            f"port {settings.serve_port} on {settings.serve_host} is taken; stop what uses it or set SLUICE_SERVE_PORT"
        )
    if pid is None:
        pid = start_detached(
            settings, STANDIN, [sys.executable, "-m", "pipelines.platform.standin"], _service_env(settings)
        )
    took = wait_until(
        lambda: standin_healthy(settings), service=STANDIN, settings=settings, pid=pid, timeout=STANDIN_START_TIMEOUT
    )
    echo(
        f"standin: serving what {settings.gitops_branch} declares at {settings.serve_url} after {took:.1f}s (pid {pid})"
    )
    return pid


def platform_up(settings: Settings, echo: Echo = print) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    if localstack.manages_localstack(settings):
        localstack.start_localstack(settings, echo)
    else:
        echo(f"localstack: skipped (S3 is {settings.s3_endpoint_url or 'real AWS'}, not a local LocalStack)")
    outputs = terraform.apply_storage(settings, echo)
    echo(f"buckets: {', '.join(sorted(outputs.values()))}")
    if localstack.manages_localstack(settings):
        s3_mirror.restore(settings, echo)
        s3_mirror.start(settings, echo)
    if mlflow_server.manages_mlflow(settings):
        mlflow_server.start_mlflow(settings, echo)
    else:
        echo(f"mlflow: skipped (MLFLOW_TRACKING_URI={settings.tracking_uri} is not this machine's server)")
    if prometheus.manages_prometheus(settings):
        pushgateway.start(settings, echo)
        prometheus.start(settings, echo)
    else:
        echo(f"prometheus: skipped (PROMETHEUS_URL={settings.metrics_url})")
    inference_log.start(settings, echo)
    gitserver.ensure_remote(settings, echo)
    start_runner(settings, echo)
    if settings.standin:
        start_standin(settings, echo)
    else:
        echo("standin: not started (SLUICE_STANDIN=0: a real cluster serves what Git declares)")
    console.start(settings, echo)


SERVICES = (
    console.SERVICE,
    STANDIN,
    RUNNER,
    inference_log.SERVICE,
    "prometheus",
    pushgateway.SERVICE,
    "mlflow",
    s3_mirror.SERVICE,
    "localstack",
)


def stop_all(settings: Settings, echo: Echo = print) -> dict[str, int | None]:
    """Stop in reverse order of `up` (clients before what they use). Returns the pids stopped."""
    stopped: dict[str, int | None] = {}
    for service in SERVICES:
        if service == s3_mirror.SERVICE:
            s3_mirror.final_copy(settings, echo)
        pid = stop_service(settings, service)
        stopped[service] = pid
        if pid is not None:
            echo(f"{service}: stopped (pid {pid})")
    return stopped


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    try:
        platform_up(settings)
    except PlatformError as e:
        print(f"sluice up: {e}", file=sys.stderr)
        return 1
    print(f"\nplatform is up in {time.monotonic() - started:.0f}s:")
    print(f"  MLflow      {settings.tracking_uri}")
    print(f"  S3          {settings.s3_endpoint_url or 'AWS'}")
    print(f"  Prometheus  {settings.metrics_url}")
    if pushgateway.healthy(settings):
        print(f"  Pushgateway {settings.embedded_pushgateway_url} (drift and feedback figures)")
    print(f"  Payload log {settings.inference_log_url} (Parquet in s3://{settings.data_bucket}/inference-log/)")
    print(f"  V2 endpoint {settings.serve_url}/v2/models/<model>/infer")
    print(f"  GitOps repo {settings.gitops_url}")
    print(f"  Console     {settings.console_url} (read-only: releases, live rollout, forecasts)")
    print("\nnext: `make train`, then promote with git:")
    print(f"  {gitserver.clone_command(settings)} && cd gitops-work")
    print("  edit gitops/models/rossmann/release.yaml (version: N), git commit -am '...', git push")
    print("  sluice ci log -f   # follow CI;   sluice status   # what serves")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stop_all(settings)
    print("platform is down; state is kept under", settings.state_dir)
    return 0


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@dataclass(frozen=True)
class ServiceRow:
    name: str
    url: str
    pid: str
    state: str


def service_rows(settings: Settings) -> list[ServiceRow]:
    def own(name: str, url: str, ok: bool, managed: bool = True) -> ServiceRow:
        if not managed:
            return ServiceRow(name, url, "-", "external")
        pid = running_pid(settings, name)
        return ServiceRow(name, url, str(pid or "-"), "up" if ok else "DOWN")

    rows = [
        own(
            "localstack",
            localstack.localstack_url(settings),
            localstack.localstack_healthy(settings),
            localstack.manages_localstack(settings),
        ),
        own(
            s3_mirror.SERVICE,
            str(s3_mirror.home(settings)),
            running_pid(settings, s3_mirror.SERVICE) is not None,
            localstack.manages_localstack(settings),
        ),
        own(
            "mlflow",
            settings.tracking_uri,
            mlflow_server.mlflow_healthy(settings),
            mlflow_server.manages_mlflow(settings),
        ),
    ]
    if prometheus.manages_prometheus(settings) and prometheus.binary(settings) is None:
        rows.append(ServiceRow("prometheus", settings.metrics_url, "-", "NOT INSTALLED"))
    else:
        rows.append(
            own(
                "prometheus",
                settings.metrics_url,
                prometheus.healthy(settings),
                prometheus.manages_prometheus(settings),
            )
        )
    if prometheus.manages_prometheus(settings) and pushgateway.binary() is not None:
        rows.append(own(pushgateway.SERVICE, settings.embedded_pushgateway_url, pushgateway.healthy(settings)))
    rows.append(own(inference_log.SERVICE, settings.inference_log_url, inference_log.healthy(settings)))
    local = settings.gitops_remote_path
    rows.append(
        ServiceRow("git", settings.gitops_url, "-", "up" if local is None or (local / "HEAD").is_file() else "DOWN")
    )
    rows.append(
        own(RUNNER, str(settings.logs_dir / "ci"), running_pid(settings, RUNNER) is not None, local is not None)
    )
    if settings.standin:
        rows.append(own(STANDIN, settings.serve_url, standin_healthy(settings)))
    rows.append(own(console.SERVICE, settings.console_url, console.healthy(settings)))
    return rows


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.platform.status import print_status

    return print_status(settings, service_rows(settings), _table)


def pid_of(settings: Settings, service: str) -> Any:
    return pid_file(settings, service)
