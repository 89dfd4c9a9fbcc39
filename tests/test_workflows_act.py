"""Each GitHub workflow, run for real by the local CI runner (act on this host) against the embedded
platform: the cases the git-push story does not reach.

- promote: on a forge without the pre-receive check (GitHub), an unknown version fails the job with
  the reason and commits nothing;
- rollout: dispatched with nothing in rollout it succeeds and does nothing; with a canary and no
  traffic it holds, records that once, and succeeds;
- ci: lint and a small test subset, dispatched with `sluice ci run ci --input pytest-args=...`.
(check runs in every push's pre-receive hook; promote, rollout and sync in tests/test_git_push.py.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.state import Revision, read_model
from pipelines.platform import ci_queue
from pipelines.platform.ci_commands import wait_for
from pipelines.platform.workspace import Workspace, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def dispatch(settings: Settings, workflow: str, timeout: float = 900.0, **inputs: str) -> ci_queue.Result:
    job = ci_queue.enqueue(settings, "workflow_dispatch", workflow=workflow, inputs=inputs)
    result = wait_for(settings, job.id, timeout, follow=False)
    assert result is not None, f"{workflow} did not finish in {timeout:.0f}s"
    return result


def log_of(settings: Settings, result: ci_queue.Result) -> str:
    return ci_queue.log_path(settings, result.job.id).read_text(errors="replace")


@pytest.fixture(scope="module")
def clone(platform: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str]]:
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    model = f"wf-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (platform.aws_env() | {"MLFLOW_TRACKING_URI": platform.tracking_uri}).items():
            mp.setenv(k, v)
        export_client_env(platform)
        trained = train(generate(stores=6, days=150, seed=5), TrainConfig.quick())
        for _ in range(2):
            log_and_register(trained, model)
    work = Workspace(platform.gitops_url, tmp_path_factory.mktemp("bob") / "gitops", name="bob")
    work.add_model(model)
    work.commit(f"{model}: new model")
    assert work.push().ok
    yield work, model


def test_promote_job_fails_on_an_unknown_version_and_commits_nothing(
    platform: Settings, clone: tuple[Workspace, str]
) -> None:
    work, model = clone
    remote = platform.gitops_remote_path
    assert remote is not None
    hook = remote / "hooks" / "pre-receive"
    hook.rename(hook.with_suffix(".off"))  # a forge without the required check, like plain GitHub
    try:
        work.set_release(model, version="999")
        work.commit(f"{model}: release v999")
        pushed = work.push()
        assert pushed.ok, pushed.output
        job_id = next(ln.split("queued job ")[1].split(";")[0] for ln in pushed.remote_lines() if "queued job" in ln)
    finally:
        hook.with_suffix(".off").rename(hook)
    result = wait_for(platform, job_id, 600, follow=False)
    assert result is not None and result.status == "failure"
    assert [w["workflow"] for w in result.workflows] == ["promote"]
    log = log_of(platform, result)
    assert f"'{model}' has no version 999 in the registry" in log
    assert "::error title=sluice" in log
    assert git.resolve(remote, "main") == pushed.sha  # CI committed nothing
    assert read_model(Revision(remote, "main"), model).status.phase == "empty"


def test_rollout_job_with_nothing_and_with_a_canary_without_traffic(
    platform: Settings, clone: tuple[Workspace, str]
) -> None:
    work, model = clone
    remote = platform.gitops_remote_path
    assert remote is not None
    quiet = dispatch(platform, "rollout", model=model)
    assert quiet.status == "success" and "no rollout in progress" in log_of(platform, quiet)
    work.pull()
    work.set_release(model, version="1")
    work.commit(f"{model}: release v1")
    assert work.push().ok
    wait_for_status(remote, model, lambda s: s.phase == "stable", 600)
    work.pull()
    work.set_release(model, version="2")
    work.commit(f"{model}: release v2")
    assert work.push().ok
    wait_for_status(remote, model, lambda s: s.phase == "canary", 600)
    held = dispatch(platform, "rollout", model=model)
    assert held.status == "success"
    status = read_model(Revision(remote, "main"), model).status
    assert status.phase == "canary" and status.decision is not None and status.decision.action == "hold"
    holds = [e for e in git.sluice_log(remote, model, rev="main") if e.get("Action") == "hold"]
    again = dispatch(platform, "rollout", model=model)
    assert again.status == "success"
    assert len([e for e in git.sluice_log(remote, model, rev="main") if e.get("Action") == "hold"]) == len(holds)


def test_ci_workflow_lints_and_runs_a_test_subset(platform: Settings) -> None:
    result = dispatch(platform, "ci", timeout=1500, **{"pytest-args": "-q tests/test_decide.py"})
    log = log_of(platform, result)
    assert result.status == "success", log[-3000:]
    assert "All checks passed!" in log and "Success: no issues found" in log
    assert " passed" in log


def test_kind_e2e_workflow_is_valid_for_act(platform: Settings) -> None:
    """Its cluster steps cannot run here; act validates it and lists its job (act's --dryrun runs
    `run:` steps anyway in host mode, so it is not used)."""
    from pipelines.platform import act

    wf = next(
        w
        for w in act.load_workflows(Path(__file__).resolve().parent.parent / ".github" / "workflows")
        if w.name == "kind-e2e"
    )
    act.standins_for([wf])  # every uses: has a stand-in
    import subprocess

    proc = subprocess.run([act.act_binary(), "--list", "-W", str(wf.path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "kind-e2e.yml" in proc.stdout


def test_retrain_releases_through_git_when_it_beats_the_champion(platform: Settings, tmp_path: Path) -> None:
    """`sluice ci retrain` as the retrain workflow runs it: train, gate, commit the release file, canary."""
    import os
    import subprocess
    import sys

    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    model = f"retrain-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **platform.aws_env(), "MLFLOW_TRACKING_URI": platform.tracking_uri}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        export_client_env(platform)
        # The champion: trained on other stores' data, so the retrain on today's data beats it.
        log_and_register(train(generate(stores=8, days=200, seed=3), TrainConfig.quick()), model)
    work = Workspace(platform.gitops_url, tmp_path / "w", name="carol")
    work.add_model(model)
    work.set_release(model, version="1")
    work.commit(f"{model}: release v1")
    assert work.push().ok
    remote = platform.gitops_remote_path
    assert remote is not None
    wait_for_status(remote, model, lambda s: s.phase == "stable", 600)
    ci = Workspace(platform.gitops_url, tmp_path / "ci", name="sluice-ci")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ci", "retrain", "--repo", str(ci.path), "--model", model,
         "--stores", "8", "--days", "200", "--seed", "11", "--preset", "quick", "--push"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "retrained v2: PASS" in proc.stdout and "promoted to a 10% canary" in proc.stdout, proc.stdout
    entries = git.sluice_log(remote, model, rev="main")
    assert [e.get("Action") for e in entries[:2]] == ["promote", "retrain"]
    ci.pull()
    assert "version: 2  # set by sluice retrain" in ci.release_path(model).read_text()
    status = read_model(Revision(remote, "main"), model).status
    assert status.phase == "canary" and status.canary is not None and status.canary.version == "2"
