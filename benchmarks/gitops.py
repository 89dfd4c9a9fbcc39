"""Wall time of `sluice promote` and `sluice rollout step`, as CI runs them (fresh subprocesses).

Target: under 3 s each, excluding the push. Uses the platform of `sluice up` when its MLflow answers,
else starts a private one (LocalStack + MLflow on free ports) in a tmp dir and stops it afterwards.
Trains two small versions, then times in a throwaway git repository:

  promote v1          first release (no gate to run, S3 check, render, commit)
  promote v2          canary 10% (recorded gate verdict, S3 check, render, commit)
  rollout step (xN)   metrics from a runtime-style /metrics endpoint -> hold/advance commits

    uv run python benchmarks/gitops.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pipelines import platform as plat  # noqa: E402
from pipelines.config import Settings, load_settings  # noqa: E402

MODEL = "rossmann-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def platform() -> Iterator[Settings]:
    settings = load_settings()
    if plat.mlflow_healthy(settings) and plat.localstack_healthy(settings):
        print(f"using the running platform: MLflow {settings.tracking_uri}")
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        env = {
            "SLUICE_STATE_DIR": str(Path(tmp) / "state"),
            "SLUICE_S3_PORT": str(_free_port()),
            "SLUICE_MLFLOW_PORT": str(_free_port()),
        }
        own = load_settings({**os.environ, **env})
        plat.ensure_localstack_venv(settings)
        link = plat.localstack_venv(own)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(plat.localstack_venv(settings), target_is_directory=True)
        print("starting a private platform (LocalStack + MLflow) ...")
        t0 = time.perf_counter()
        try:
            plat.platform_up(own, echo=lambda *a: None)
            print(f"  up in {time.perf_counter() - t0:.1f} s")
            yield own
        finally:
            plat.stop_all(own, echo=lambda *a: None)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(tmp: Path) -> Path:
    remote, work = tmp / "remote.git", tmp / "work"
    git(tmp, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(tmp, "clone", "--quiet", str(remote), str(work))
    for k, v in (("user.name", "bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false")):
        git(work, "config", k, v)
    git(work, "checkout", "--quiet", "-b", "main")
    folder = work / "gitops" / "models" / MODEL
    folder.mkdir(parents=True)
    release = {
        "model": MODEL,
        "version": 1,
        "rollout": {"steps": [10, 50, 100]},
        "gates": {
            "max_error_rate": 0.01,
            "max_p95_latency_ms": 250,
            "max_mean_relative_divergence": 0.15,
            "min_requests": 200,
        },
    }
    (folder / "release.yaml").write_text(yaml.safe_dump(release))
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "initial")
    git(work, "push", "--quiet", "-u", "origin", "main")
    return work


def metrics_server(v_stable: str, v_canary: str) -> tuple[HTTPServer, str]:
    """A runtime-style /metrics whose canary counters grow by 250 requests per scrape."""
    import numpy as np
    from prometheus_client import generate_latest

    from serving.metrics import ServingMetrics

    m = ServingMetrics()
    stable, canary = m.bind(MODEL, v_stable), m.bind(MODEL, v_canary)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            for _ in range(250):
                canary.observe_request("ok", 0.004)
                stable.observe_request("ok", 0.004)
            canary.observe_predictions(np.full(250, 5000.0))
            stable.observe_predictions(np.full(250, 5050.0))
            body = generate_latest(m.registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/metrics"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt, p.stdout.strip().splitlines()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="rollout steps and promote runs to time (default 5)")
    args = ap.parse_args()

    with platform() as settings:
        env = {**os.environ, **settings.aws_env(), "MLFLOW_TRACKING_URI": settings.tracking_uri}
        os.environ.update(env)
        from mlflow import MlflowClient

        from model.evaluation import evaluate
        from model.registry import log_and_register
        from model.synthetic import generate
        from model.training import TrainConfig, train

        print("training two quick versions ...")
        raw = generate(stores=10, days=200, seed=11)
        versions = []
        for _ in range(2):
            reg = log_and_register(train(raw, TrainConfig.quick(), progress=False), MODEL)
            assert reg is not None
            versions.append(reg.version)
        v1, v2 = versions
        client = MlflowClient(settings.tracking_uri)
        evaluate(client, MODEL, v2, v1, raw)  # recorded verdict: promote reads it instead of scoring

        cli = [sys.executable, "-m", "pipelines.cli"]
        figures: dict[str, list[float]] = {
            "import only (sluice --help)": [],
            "promote (first release)": [],
            "promote (canary, recorded gate)": [],
            "rollout step": [],
        }
        server, url = metrics_server(v1, v2)
        try:
            for i in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="sluice-bench-repo-") as tmp:
                    repo = make_repo(Path(tmp))
                    client.delete_registered_model_alias(MODEL, "champion") if i else None
                    figures["import only (sluice --help)"].append(timed([*cli, "--help"], env)[0])
                    dt, line = timed([*cli, "promote", "--model", MODEL, "--version", v1, "--repo", str(repo)], env)
                    figures["promote (first release)"].append(dt)
                    dt, line = timed([*cli, "promote", "--model", MODEL, "--version", v2, "--repo", str(repo)], env)
                    figures["promote (canary, recorded gate)"].append(dt)
                    dt, line = timed(
                        [*cli, "rollout", "step", "--model", MODEL, "--repo", str(repo), "--metrics-url", url], env
                    )
                    figures["rollout step"].append(dt)
                    if i == 0:
                        print(f"  last step said: {line}")
        finally:
            server.shutdown()

    print(f"\nwall time of fresh `sluice` subprocesses, {args.repeat} runs each (target < 3 s, no push):")
    print(f"{'command':36} {'median':>8} {'min':>8} {'max':>8}")
    for name, xs in figures.items():
        print(f"{name:36} {statistics.median(xs):7.2f}s {min(xs):7.2f}s {max(xs):7.2f}s")
    load = os.getloadavg()[0]
    print(f"(load average {load:.2f} on {os.cpu_count()} cores while measuring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
