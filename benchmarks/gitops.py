"""How long a promotion takes through `git push`, and a rollout step against a real Prometheus.

Starts a private embedded platform (free ports, a temp state dir) and registers small versions, then:

  push -> job start        from `git push` returning to the CI runner starting the job
  push -> rendered commit  from `git push` returning to CI's commit (the rendered manifest and status
                           record) landing on the remote: the pre-receive check, act running the
                           promote workflow (checkout, uv sync on a warm environment, sluice ci
                           promote, its push through the hooks)
  rollout step             `sluice ci rollout` as CI runs it (a fresh process) on a canary with live
                           traffic, its gates computed by Prometheus

Each promotion is the first release of a model of its own (same work as any promotion: resolve,
checks, gate, render, commit, push), so the rounds are independent. Median and spread of --rounds.

    uv run python benchmarks/gitops.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pipelines.config import Settings, load_settings  # noqa: E402
from pipelines.gitops import git  # noqa: E402
from pipelines.platform import ci_queue, localstack, up  # noqa: E402
from pipelines.platform.workspace import Workspace, wait_for_status  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def platform(tmp: Path) -> Iterator[Settings]:
    shared = load_settings()
    env = {
        "SLUICE_STATE_DIR": str(tmp / "state"),
        **{
            k: str(_free_port())
            for k in ("SLUICE_S3_PORT", "SLUICE_MLFLOW_PORT", "SLUICE_PROMETHEUS_PORT", "SLUICE_SERVE_PORT")
        },
        "SLUICE_SCRAPE_INTERVAL": "1",
        "SLUICE_POLL_INTERVAL": "1",
        "SLUICE_CI_TICK": "3600",  # the benchmark runs the rollout step itself
    }
    own = load_settings({**os.environ, **env})
    localstack.ensure_localstack_venv(shared)
    link = localstack.localstack_venv(own)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(localstack.localstack_venv(shared), target_is_directory=True)
    os.environ.setdefault("SLUICE_CI_VENV", str(shared.state_dir / "ci" / "venv"))  # a warm cache
    print("starting a private platform ...", flush=True)
    t0 = time.perf_counter()
    try:
        up.platform_up(own, echo=lambda *a: None)
        print(f"  up in {time.perf_counter() - t0:.1f} s", flush=True)
        yield own
    finally:
        up.stop_all(own, echo=lambda *a: None)


def register(settings: Settings, names: list[str]) -> None:
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    export_client_env(settings)
    raw = generate(stores=8, days=200, seed=3)
    trained = train(raw, TrainConfig.quick())
    for name in names:
        log_and_register(trained, name)


def add_model(work: Workspace, model: str) -> None:
    template = (work.path / "gitops/models/rossmann/release.yaml").read_text()
    folder = work.path / "gitops" / "models" / model
    folder.mkdir(parents=True)
    (folder / "release.yaml").write_text(template.replace("model: rossmann", f"model: {model}"))


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def summary(name: str, values: list[float]) -> str:
    med = statistics.median(values)
    return f"{name:28s} median {med:6.2f} s  min {min(values):6.2f}  max {max(values):6.2f}  (n={len(values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp, platform(Path(tmp)) as settings:
        models = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(args.rounds + 1)]
        register(settings, models)
        work = Workspace(settings.gitops_url, Path(tmp) / "work")
        for m in models:
            add_model(work, m)
        git.git(work.path, "add", "--all")
        work.commit("benchmark models, nothing released")
        assert work.push().ok
        remote = settings.gitops_remote_path
        assert remote is not None
        # One promotion first, untimed: it fills the runner's environment if it was cold.
        work.set_release(models[0], version="1")
        work.commit("warm up")
        assert work.push().ok
        wait_for_status(remote, models[0], lambda s: s.phase == "stable", 600)
        to_start, to_commit = [], []
        for model in models[1:]:
            work.pull()
            work.set_release(model, version="1")
            work.commit(f"{model}: release v1")
            pushed = work.push()
            t_push = time.time()
            assert pushed.ok, pushed.output
            wait_for_status(remote, model, lambda s: s.phase == "stable", 600)
            t_commit = time.time()
            job = ci_queue.results(settings, 1)[-1]
            to_start.append(max(0.0, stamp(job.started_at) - t_push))
            to_commit.append(t_commit - t_push)
            print(f"  {model}: job start +{to_start[-1]:.1f} s, rendered commit +{to_commit[-1]:.1f} s", flush=True)
        print(summary("push -> job start", to_start))
        print(summary("push -> rendered commit", to_commit))
        print(summary("rollout step (fresh process)", rollout_steps(settings, models[0], work, args.rounds)))
    return 0


def rollout_steps(settings: Settings, model: str, work: Workspace, rounds: int) -> list[float]:
    """A canary of `model` with live traffic, then `sluice ci rollout` timed in a scratch clone."""
    from model.synthetic import generate
    from pipelines.platform.traffic import Traffic, request_rows, wait_until_served

    register(settings, [model])  # version 2
    work.pull()
    work.set_release(model, version="2")
    work.commit(f"{model}: canary v2")
    assert work.push().ok
    remote = settings.gitops_remote_path
    assert remote is not None
    wait_for_status(remote, model, lambda s: s.phase == "canary", 600)
    wait_until_served(settings.serve_url, model, "2", 600)
    rows = request_rows(generate(stores=8, days=200, seed=3).train)
    with Traffic(settings.serve_url, model, rows, concurrency=2) as traffic:
        traffic.send(600)
    time.sleep(3)  # two scrapes
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PROMETHEUS_URL": settings.metrics_url,
        "SLUICE_KUBE_API": settings.serve_url,
        **settings.aws_env(),
    }
    times = []
    for _ in range(rounds):
        work.pull()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "ci", "rollout", "--repo", str(work.path), "--model", model],
            env=env,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - t0)
        first = (proc.stdout.strip().splitlines() or ["?"])[0]
        print(f"  rollout step {times[-1]:.2f} s: {first[:110]}", flush=True)
    return times


if __name__ == "__main__":
    sys.exit(main())
