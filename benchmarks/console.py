"""How the console's pages scale with the GitOps history, measured in-process (no network).

Builds two bare GitOps repositories the way CI leaves them (release file, status record, one commit
per CI step with `Sluice-*` trailers):

  small   1 model,  10 CI commits   (a fresh install)
  large   5 models, 300 CI commits each (1,500 commits: months of rollouts on several models)

and times, through Starlette's TestClient (server-side work only: git, templates, plotly):

  /releases   every model's status record, release file and history (git show / git log per model)
  /live       with Prometheus down (the panel's own cost without data: git for the gates + a refused
              connection)

Rounds alternate the order (small/large, large/small, ...). Median and min-max over --rounds.

    uv run python benchmarks/console.py [--rounds 5] [--requests 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from pipelines.config import load_settings  # noqa: E402
from pipelines.console.app import create_app  # noqa: E402
from pipelines.gitops import git  # noqa: E402
from pipelines.gitops.status import Canary, Decision, Served, Status, dump_status  # noqa: E402

GATES = {"max_error_rate": 0.01, "max_p95_latency_ms": 250, "max_mean_relative_divergence": 0.15, "min_requests": 200}
ACTIONS = ("promote", "hold", "advance", "advance", "finalize")


def build(root: Path, models: int, commits: int) -> Path:
    root.mkdir(parents=True)
    remote, work = root / "gitops.git", root / "work"
    git.git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git.git(root, "clone", "--quiet", str(remote), str(work))
    git.git(work, "checkout", "--quiet", "-b", "main")
    for i in range(commits):
        for m in range(models):
            name = f"model-{m}"
            folder = work / "gitops" / "models" / name
            folder.mkdir(parents=True, exist_ok=True)
            version = str(i // len(ACTIONS) + 1)
            action = ACTIONS[i % len(ACTIONS)]
            release = {"model": name, "version": int(version), "gates": GATES}
            (folder / "release.yaml").write_text(yaml.safe_dump(release, sort_keys=False))
            served = {"storage_uri": f"s3://b/{version}", "revision": f"r{version}"}
            status = Status(
                model=name,
                phase="canary",
                stable=Served(version=version, **served),
                canary=Canary(version=version, percent=10 * (i % 9 + 1), **served),
                decision=Decision(action=action, reason=f"step {i} of {name}", at="2026-11-30T00:00:00Z"),
            )
            (folder / "status.yaml").write_text(dump_status(status))
            trailers = {"Model": name, "Version": version, "Step": "50", "Action": action, "Reason": f"step {i}"}
            git.commit(work, ["gitops"], f"{name}: {action}", "", trailers)
    git.git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return remote


def time_page(client: TestClient, path: str, requests: int) -> float:
    """Median seconds of `requests` GETs (after one warm-up)."""
    assert client.get(path).status_code == 200
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        resp = client.get(path)
        samples.append(time.perf_counter() - started)
        assert resp.status_code == 200
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    down = "http://127.0.0.1:1"
    with tempfile.TemporaryDirectory(prefix="sluice-console-bench-") as tmp:
        started = time.perf_counter()
        repos = {"small": build(Path(tmp) / "small", 1, 10), "large": build(Path(tmp) / "large", 5, 300)}
        print(f"built the repositories in {time.perf_counter() - started:.1f} s")
        clients = {}
        for case, remote in repos.items():
            env = {
                "SLUICE_STATE_DIR": str(Path(tmp) / case / "state"),
                "SLUICE_GITOPS_REMOTE": str(remote),
                "MLFLOW_TRACKING_URI": down,
                "PROMETHEUS_URL": down,
            }
            clients[case] = TestClient(create_app(load_settings(env)))
        results: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            order = ["small", "large"] if r % 2 == 0 else ["large", "small"]
            for case in order:
                for path in ("/releases", "/live?model=model-0"):
                    results.setdefault((case, path), []).append(time_page(clients[case], path, args.requests))
    print(f"\n{os.getloadavg()[0]:.1f} load average; median (min-max) over {args.rounds} rounds, ms")
    print(f"{'page':<22} {'small':>22} {'large':>22} {'large/small':>12}")
    for path in ("/releases", "/live?model=model-0"):
        small, large = results[("small", path)], results[("large", path)]

        def fmt(xs: list[float]) -> str:
            return f"{statistics.median(xs) * 1000:.1f} ({min(xs) * 1000:.1f}-{max(xs) * 1000:.1f})"

        ratio = statistics.median(large) / statistics.median(small)
        print(f"{path:<22} {fmt(small):>22} {fmt(large):>22} {ratio:>11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
