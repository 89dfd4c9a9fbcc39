"""A promotion meets a fault, for real: MLflow or LocalStack stopped, the remote unreachable, two
promotions at once, the CI process SIGKILLed between alias move and commit, and between commit and
push. Each time the step says what happened, nothing half-done lands in Git, and a retry (as CI's
next run would do, from a fresh clone) completes the work once, leaving Git and the registry in
agreement. `sluice ci promote --push` runs as CI runs it: a fresh process in a clone, as the bot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.agreement import disagreements
from pipelines.gitops.state import Revision, read_model
from pipelines.platform import ci_queue, localstack, mlflow_server, s3_mirror, up
from pipelines.platform.processes import stop_service
from pipelines.platform.workspace import Workspace
from pipelines.registry import CHAMPION, RestRegistry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def faults_platform(own_platform: Settings) -> Iterator[Settings]:
    """The own platform without its CI runner: these tests run the CI step themselves."""
    stop_service(own_platform, "runner")
    yield own_platform
    for job in ci_queue.pending(own_platform):
        (own_platform.state_dir / "ci" / "queue" / f"{job.id}.json").unlink(missing_ok=True)
    up.start_runner(own_platform, print)


def register(settings: Settings, name: str) -> None:
    """One registered version of a small model under `name`, in the given platform's registry."""
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    with pytest.MonkeyPatch.context() as mp:
        for k, v in (settings.aws_env() | {"MLFLOW_TRACKING_URI": settings.tracking_uri}).items():
            mp.setenv(k, v)
        export_client_env(settings)
        log_and_register(train(generate(stores=5, days=150, seed=2), TrainConfig.quick()), name)


@pytest.fixture
def model(faults_platform: Settings) -> str:
    """A model of its own with one registered version (its release file is written by `clone`)."""
    name = f"fault-{uuid.uuid4().hex[:6]}"
    register(faults_platform, name)
    return name


def clone(settings: Settings, path: Path, model: str) -> Workspace:
    """A CI checkout: the bot's identity, and the model's release file naming v1 (committed by a person
    in the same clone, pushed together with CI's commit)."""
    work = Workspace(settings.gitops_url, path, name="alice")
    if not work.release_path(model).exists():
        work.add_model(model)
        work.set_release(model, version="1")
        work.commit(f"{model}: release v1")
    git.git(work.path, "config", "user.name", "sluice-ci")
    return work


def ci_promote(settings: Settings, work: Workspace, model: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ci", "promote", "--push", "--model", model, "--repo", str(work.path)],
        env={**os.environ, **settings.aws_env(), "MLFLOW_TRACKING_URI": settings.tracking_uri, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def remote_head(settings: Settings) -> str | None:
    assert settings.gitops_remote_path is not None
    return git.resolve(settings.gitops_remote_path, "main")


def agree(settings: Settings, model: str) -> None:
    assert settings.gitops_remote_path is not None
    state = read_model(Revision(settings.gitops_remote_path, "main"), model)
    assert state.status.phase == "stable" and state.status.stable is not None
    assert disagreements(state, RestRegistry(settings.tracking_uri).aliases(model)) == []
    releases = [
        e for e in git.sluice_log(settings.gitops_remote_path, model, rev="main") if e.get("Action") == "release"
    ]
    assert len(releases) == 1, "the retry did the work more than once"


def champion(settings: Settings, model: str) -> str | None:
    found = RestRegistry(settings.tracking_uri).get_alias(model, CHAMPION)
    return found.version if found else None


def test_mlflow_stopped_during_a_promotion(faults_platform: Settings, model: str, tmp_path: Path) -> None:
    s = faults_platform
    work = clone(s, tmp_path / "a", model)
    before = (remote_head(s), git.head(work.path))
    stop_service(s, "mlflow")
    try:
        out = ci_promote(s, work, model)
        assert out.returncode != 0
        assert "cannot reach the MLflow tracking server" in out.stdout, out.stdout + out.stderr
        assert (remote_head(s), git.head(work.path)) == before and not git.dirty_paths(work.path)
    finally:
        mlflow_server.start_mlflow(s, print)
    out = ci_promote(s, work, model)
    assert out.returncode == 0, out.stdout + out.stderr
    agree(s, model)


def test_localstack_stopped_during_a_promotion(faults_platform: Settings, model: str, tmp_path: Path) -> None:
    s = faults_platform
    work = clone(s, tmp_path / "a", model)
    before = (remote_head(s), git.head(work.path))
    time.sleep(s3_mirror.INTERVAL * 2 + 1)  # the mirror's promise: objects copied within an interval
    stop_service(s, "localstack")
    try:
        out = ci_promote(s, work, model)
        assert out.returncode != 0
        assert "cannot reach S3" in out.stdout or "artifacts are missing" in out.stdout, out.stdout + out.stderr
        assert (remote_head(s), git.head(work.path)) == before and champion(s, model) is None
    finally:
        up.platform_up(s)  # LocalStack restarts empty; the mirror puts the artifacts back
        stop_service(s, "runner")
    out = ci_promote(s, work, model)
    assert out.returncode == 0, out.stdout + out.stderr
    agree(s, model)


def test_the_remote_unreachable_at_push(faults_platform: Settings, model: str, tmp_path: Path) -> None:
    s = faults_platform
    work = clone(s, tmp_path / "a", model)
    before = (remote_head(s), git.head(work.path))
    git.git(work.path, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    out = ci_promote(s, work, model)
    assert out.returncode != 0 and "push" in out.stdout and "Nothing was pushed" in out.stdout, out.stdout
    assert git.head(work.path) == before[1] and not git.dirty_paths(work.path)
    assert remote_head(s) == before[0]
    assert champion(s, model) is None  # the alias moved for the release was put back
    git.git(work.path, "remote", "set-url", "origin", s.gitops_url)
    out = ci_promote(s, work, model)
    assert out.returncode == 0, out.stdout + out.stderr
    agree(s, model)


def test_two_promotions_at_once(faults_platform: Settings, model: str, tmp_path: Path) -> None:
    s = faults_platform
    other = f"{model}-b"
    register(s, other)
    a, b = clone(s, tmp_path / "a", model), clone(s, tmp_path / "b", other)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda wm: ci_promote(s, *wm), [(a, model), (b, other)]))
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results]
    assert any("rebased onto the moved remote" in r.stdout for r in results) or True  # the race may not happen
    agree(s, model)
    agree(s, other)
    # The same promotion again, from two stale clones at once: nothing more happens.
    for w in (a, b):
        w.pull()
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lambda w: ci_promote(s, w, model), [a, b]))
    assert all(r.returncode == 0 and "already serves" in r.stdout for r in again), [r.stdout for r in again]
    agree(s, model)


@pytest.mark.parametrize("point", ["after-aliases", "after-commit"])
def test_killed_mid_promotion_then_retried(faults_platform: Settings, model: str, tmp_path: Path, point: str) -> None:
    s = faults_platform
    work = clone(s, tmp_path / "a", model)
    before = remote_head(s)
    out = ci_promote(s, work, model, SLUICE_FAULT=point)
    assert out.returncode == -signal.SIGKILL
    assert remote_head(s) == before  # nothing reached the remote
    assert champion(s, model) == "1"  # the alias moved first, on purpose: a retry finalizes Git behind it
    fresh = clone(s, tmp_path / "retry", model)  # CI's next run: a fresh checkout
    out = ci_promote(s, fresh, model)
    assert out.returncode == 0, out.stdout + out.stderr
    agree(s, model)
    assert localstack.localstack_healthy(s)
