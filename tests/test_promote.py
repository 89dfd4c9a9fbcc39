"""`sluice promote` against the real local platform (LocalStack S3 + MLflow server) and real git repos.

Three versions are trained once per module: v1 and v2 with the same quick configuration (v2 passes
the evaluation gate against v1), v3 with two boosting rounds (fails it). Refusals must leave git
HEAD, the working tree, the remote and the registry aliases exactly as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_helpers import Repos, git, make_repos

from pipelines.config import Settings
from pipelines.promote import Outcome, check_artifacts, default_s3_client, promote, run_evaluation_gate
from pipelines.registry_client import RestRegistry

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Registered:
    settings: Settings
    registry: RestRegistry
    model: str
    good: str
    also_good: str
    bad: str
    missing: str  # registered, but nothing under its s3:// URI
    unsigned: str  # MLmodel without a signature
    env: dict[str, str]


@pytest.fixture(scope="module")
def registered(platform: Settings) -> Iterator[Registered]:
    from mlflow import MlflowClient

    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train

    env = platform.aws_env() | {"MLFLOW_TRACKING_URI": platform.tracking_uri}
    model = f"rossmann-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        raw = generate(stores=10, days=200, seed=3)
        quick = TrainConfig.quick()
        versions = []
        for config in (quick, quick, replace(quick, rounds=2, early_stopping_rounds=1)):
            reg = log_and_register(train(raw, config, progress=False), model)
            assert reg is not None and reg.download_uri.startswith("s3://")
            versions.append(reg.version)
        client = MlflowClient(platform.tracking_uri)
        missing = client.create_model_version(model, source=f"s3://{platform.models_bucket}/gone/{model}", run_id=None)
        prefix = f"unsigned/{model}"
        s3 = default_s3_client()
        s3.put_object(Bucket=platform.models_bucket, Key=f"{prefix}/MLmodel", Body=b"flavors: {python_function: {}}\n")
        unsigned = client.create_model_version(model, source=f"s3://{platform.models_bucket}/{prefix}", run_id=None)
        yield Registered(
            platform,
            RestRegistry(platform.tracking_uri),
            model,
            *versions,
            str(missing.version),
            str(unsigned.version),
            env,
        )


@pytest.fixture
def env(registered: Registered, monkeypatch: pytest.MonkeyPatch) -> Registered:
    for k, v in registered.env.items():
        monkeypatch.setenv(k, v)
    return registered


def run(r: Registered, repos: Repos, ref: str, **kw: Any) -> Outcome:
    return promote(repos.work, r.registry, r.model, ref, gate=run_evaluation_gate(r.settings), **kw)


def snapshot(r: Registered, repos: Repos) -> tuple[str, str, str, dict[str, str] | None]:
    return repos.head(), repos.status(), repos.remote_head(), r.registry.aliases(r.model)


def assert_refused(out: Outcome, text: str, before: tuple[Any, ...], r: Registered, repos: Repos) -> None:
    assert out.action == "refused" and out.exit_code != 0, out.render()
    assert text in out.render()
    assert snapshot(r, repos) == before


@pytest.fixture
def repos(tmp_path: Path, env: Registered) -> Repos:
    return make_repos(tmp_path, env.model)


def test_promotion_flow_and_gate(env: Registered, repos: Repos) -> None:
    r = env
    # Reset what other tests may have set: this story starts with nothing serving and no champion.
    out = run(r, repos, r.good, push=True)
    assert out.action == "promote" and "first release" in out.message, out.render()
    doc = yaml.safe_load(repos.manifest.read_text())
    assert "canaryTrafficPercent" not in doc["spec"]["predictor"]
    assert doc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")
    assert r.registry.aliases(r.model) == {"champion": r.good}
    assert repos.remote_head() == repos.head()

    again = run(r, repos, "champion")
    assert again.action == "noop" and again.exit_code == 0 and "already serves" in again.message

    before = snapshot(r, repos)
    out = run(r, repos, r.bad, push=True)  # evaluated now against the champion: fails
    assert_refused(out, f"fails the evaluation gate against v{r.good}", before, r, repos)
    assert r.registry.get_version(r.model, r.bad).tags["gate.verdict"] == "fail"  # type: ignore[union-attr]
    assert_refused(run(r, repos, r.bad, force=True), "--force needs --reason", before, r, repos)

    out = run(r, repos, r.also_good, push=True)
    assert out.action == "promote" and "10% canary" in out.message, out.render()
    doc = yaml.safe_load(repos.manifest.read_text())
    assert doc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert doc["metadata"]["annotations"]["sluice.dev/previous-version"] == r.good
    assert r.registry.aliases(r.model) == {"champion": r.good}  # only finalize moves it


@pytest.mark.parametrize(
    ("which", "text"),
    [
        ("unknown", "has no version 999 in the registry (versions ["),
        ("missing", "artifacts are missing: no objects under s3://"),
        ("unsigned", "logged without a signature"),
        ("no-alias", "has no alias 'nope'"),
    ],
)
def test_refusals_change_nothing(env: Registered, repos: Repos, which: str, text: str) -> None:
    ref = {"unknown": "999", "missing": env.missing, "unsigned": env.unsigned, "no-alias": "nope"}[which]
    before = snapshot(env, repos)
    assert_refused(run(env, repos, ref, push=True), text, before, env, repos)
    assert not repos.manifest.exists()


def test_dirty_tree_is_refused(env: Registered, repos: Repos) -> None:
    (repos.folder / "release.yaml").write_text((repos.folder / "release.yaml").read_text() + "# wip\n")
    before = snapshot(env, repos)
    assert_refused(run(env, repos, env.good), "uncommitted changes", before, env, repos)


def test_remote_moved_rebase_or_fail(env: Registered, repos: Repos, tmp_path: Path) -> None:
    other = repos.other_clone(tmp_path / "other")
    (other / "NOTES.md").write_text("unrelated change\n")
    git(other, "add", ".")
    git(other, "commit", "--quiet", "-m", "unrelated")
    git(other, "push", "--quiet")
    out = run(env, repos, env.good, push=True)
    assert out.action == "promote" and out.push is not None and out.push.rebased, out.render()
    assert repos.remote_head() == repos.head() and (repos.work / "NOTES.md").exists()

    # Someone else commits to the same manifest; our promotion of v2 cannot rebase onto it.
    git(other, "pull", "--quiet", "--rebase")
    manifest = other / "gitops" / "models" / env.model / "inferenceservice.yaml"
    manifest.write_text(manifest.read_text().replace("maxReplicas: 3", "maxReplicas: 4"))
    git(other, "commit", "--quiet", "-am", "hand edit")
    git(other, "push", "--quiet")
    before = snapshot(env, repos)
    out = run(env, repos, env.also_good, push=True)
    assert_refused(out, "does not rebase onto it (conflict in gitops/models/", before, env, repos)


def test_s3_artifacts_deleted_after_registration(env: Registered, repos: Repos) -> None:
    """A version whose objects vanished (LocalStack restart, lifecycle rule) is refused, not rendered."""
    uri = env.registry.download_uri(env.model, env.good)
    assert check_artifacts(uri).exists and check_artifacts(uri).mlmodel
    assert not check_artifacts(uri.rstrip("/") + "-nothing-here").exists
    assert "does not exist" in check_artifacts("s3://no-such-bucket-sluice/x").detail


def test_cli_promote_and_history(env: Registered, repos: Repos) -> None:
    """The real `sluice` entry point, as CI runs it."""
    cmd = [sys.executable, "-m", "pipelines.cli"]
    proc_env = {**os.environ, **env.env, "SLUICE_MODEL_NAME": env.model}
    p = subprocess.run(
        [*cmd, "promote", "--version", env.good, "--repo", str(repos.work), "--push"],
        capture_output=True,
        text=True,
        env=proc_env,
        cwd=REPO_ROOT,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "released at 100%" in p.stdout
    p = subprocess.run(
        [*cmd, "promote", "--version", "999", "--repo", str(repos.work)],
        capture_output=True,
        text=True,
        env=proc_env,
        cwd=REPO_ROOT,
    )
    assert p.returncode == 2 and "REFUSED" in p.stdout
    p = subprocess.run(
        [*cmd, "history", "--repo", str(repos.work)], capture_output=True, text=True, env=proc_env, cwd=REPO_ROOT
    )
    assert p.returncode == 0 and "promote" in p.stdout and env.good in p.stdout, p.stdout + p.stderr
