"""The GitOps loop end to end, through `git push` only, on the real embedded platform.

Real LocalStack S3 and MLflow, the bare GitOps remote with its pre-receive and post-receive hooks,
the CI runner executing the project's own workflows with act, Prometheus scraping the runtime pods
the cluster stand-in starts, and client traffic through the stand-in's router. A person's clone
edits the release file and pushes; nothing else promotes. After every CI commit the release file,
the manifest and the status record must agree; at rest, the MLflow aliases too.

One story, in order (each test continues from the previous one's state), on a model of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.agreement import disagreements
from pipelines.gitops.state import Revision, read_model
from pipelines.gitops.status import Status
from pipelines.platform import ci_queue, up
from pipelines.platform.processes import running_pid, stop_service
from pipelines.platform.traffic import BackgroundTraffic, Traffic, request_rows, wait_until_served
from pipelines.platform.workspace import Workspace, wait_for_status
from pipelines.registry import CHAMPION, PREVIOUS, ROLLED_BACK_TAG, RestRegistry

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 240.0
BOT = "sluice-ci"


@dataclass
class Story:
    settings: Settings
    registry: RestRegistry
    model: str
    good: list[str]  # three equally good versions (the gate passes between any two)
    bad: str  # fails the gate and diverges: predictions at half the level
    crashing: str  # loads, then answers every request with a server error
    work: Workspace
    rows: object
    checked: set[str] = field(default_factory=set)

    @property
    def remote(self) -> Path:
        assert self.settings.gitops_remote_path is not None
        return self.settings.gitops_remote_path

    def status(self) -> Status:
        return read_model(Revision(self.remote, "main"), self.model).status

    def check_ci_commits(self) -> None:
        """Every CI commit since the last check leaves release file, manifest and status in agreement."""
        for c in git.commits_between(self.remote, None, "main"):
            if c.sha in self.checked:
                continue
            self.checked.add(c.sha)
            if c.committer == BOT and c.trailers.get("Model") == self.model:
                state = read_model(Revision(self.remote, c.sha), self.model)
                assert disagreements(state, None) == [], f"after {c.subject}"

    def wait(self, done, what: str) -> Status:  # type: ignore[no-untyped-def]
        status = wait_for_status(self.remote, self.model, done, TIMEOUT, on_change=lambda *_: self.check_ci_commits())
        self.check_ci_commits()
        return status

    def at_rest(self) -> None:
        state = read_model(Revision(self.remote, "main"), self.model)
        assert disagreements(state, self.registry.aliases(self.model)) == []

    def push(self, version: str | None = None, alias: str | None = None, force: str | None = None, message: str = ""):  # type: ignore[no-untyped-def]
        self.work.pull()
        self.work.set_release(self.model, version=version, alias=alias)
        self.work.commit(message or f"{self.model}: release {version or alias}", force_reason=force)
        return self.work.push()


def stable_is(version: str):  # type: ignore[no-untyped-def]
    return lambda s: s.serves_only(version)


@contextmanager
def Clients(story: Story) -> Iterator[BackgroundTraffic]:
    """Client traffic in a thread through the stand-in, counting answers per revision."""
    with (
        Traffic(story.settings.serve_url, story.model, story.rows, rows_per_request=3, concurrency=4) as traffic,
        BackgroundTraffic(traffic, batch=40) as clients,
    ):
        yield clients


def register_crashing(model: str) -> str:
    """A version with the real signature whose predict raises: every request is a 500 (a server fault)."""
    import sys

    import cloudpickle
    import mlflow

    from model.pyfunc import SIGNATURE

    class Crashing(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("broken on purpose")

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the runtime cannot import this test
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Crashing(),
                signature=SIGNATURE,
                pip_requirements=["mlflow"],
                registered_model_name=model,
            )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def story(platform: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    from model.data import RawData
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    model = f"story-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (platform.aws_env() | {"MLFLOW_TRACKING_URI": platform.tracking_uri}).items():
            mp.setenv(k, v)
        export_client_env(platform)
        raw = generate(stores=10, days=200, seed=3)
        quick = TrainConfig.quick()
        good = [log_and_register(train(raw, quick), model) for _ in range(3)]
        halved = RawData(raw.train.assign(Sales=raw.train["Sales"] / 2), raw.store, raw.source)
        bad = log_and_register(train(halved, replace(quick, rounds=2, early_stopping_rounds=1)), model)
        crashing = register_crashing(model)
    work = Workspace(platform.gitops_url, tmp_path_factory.mktemp("alice") / "gitops", name="alice")
    # A new model folder: the release file names nothing yet; steps and gates sized for a test.
    work.add_model(
        model,
        lambda t: (
            t.replace("steps: [10, 50, 100]", "steps: [25, 100]")
            .replace("min_requests: 200", "min_requests: 30")
            .replace("min_replicas: 1", "min_replicas: 2")  # two pods per revision: windows summed over pods
            .replace("  min_requests: 30", "  min_requests: 30\n  mirror_percent: 50")
        ),  # divergence on the same inputs
    )
    work.commit(f"{model}: a new model, nothing released yet")
    pushed = work.push()
    assert pushed.ok, pushed.output
    assert all(v is not None for v in [*good, bad])
    yield Story(
        platform,
        RestRegistry(platform.tracking_uri),
        model,
        [v.version for v in good if v],
        bad.version if bad else "",
        crashing,
        work,
        request_rows(raw.train),
    )


def test_first_release_goes_straight_to_100(story: Story) -> None:
    v1 = story.good[0]
    pushed = story.push(version=v1)
    assert pushed.ok, pushed.output
    assert any("first release" in line for line in pushed.remote_lines())
    assert any("queued job" in line for line in pushed.remote_lines())
    status = story.wait(stable_is(v1), "first release")
    assert status.decision is not None and status.decision.action == "release"
    assert story.registry.get_alias(story.model, CHAMPION).version == v1  # type: ignore[union-attr]
    wait_until_served(story.settings.serve_url, story.model, v1)  # the stand-in applied it and its pod is ready
    log = git.sluice_log(story.remote, story.model, rev="main")
    assert log[0].get("Action") == "release" and log[0].get("Version") == v1
    story.at_rest()


def test_refused_pushes_write_nothing(story: Story) -> None:
    before = git.resolve(story.remote, "main")
    unknown = story.push(version="999")
    assert not unknown.ok and "has no version 999" in unknown.output, unknown.output
    story.work.undo_last_commit()
    gated = story.push(version=story.bad)
    assert not gated.ok and "fails the evaluation gate" in gated.output and "Sluice-Force" in gated.output
    story.work.undo_last_commit()
    story.work.edit(f"gitops/models/{story.model}/status.yaml", lambda t: t + "# a person's edit\n")
    story.work.commit("edit what CI writes")
    owned = story.work.push()
    assert not owned.ok and "CI writes these" in owned.output
    story.work.undo_last_commit()
    assert git.resolve(story.remote, "main") == before


def test_canary_advances_and_finalizes_on_its_own(story: Story) -> None:
    """Two pods per revision; mid-window one canary pod is deleted (its counters reset, a new pod
    replaces it) and clients send requests the model rejects (4xx): neither fails the canary."""
    v1, v2 = story.good[0], story.good[1]
    with Clients(story) as clients:
        pushed = story.push(version=v2)
        assert pushed.ok, pushed.output
        canary = story.wait(lambda s: s.phase == "canary" and s.canary is not None, "canary")
        assert canary.canary is not None and canary.canary.percent == 25
        wait_until_served(story.settings.serve_url, story.model, v2)
        pods = [p for p in standin_status(story)["pods"] if p["version"] == v2]
        assert len(pods) == 1 and len(pods[0]["pods"]) == 2, pods
        delete_pod(story, pods[0]["pods"][0]["name"])
        bad_requests(story, 150)
        status = story.wait(stable_is(v2), "finalized")
    assert not clients.failures, clients.failures
    revisions = {r for _, r in clients.answers}
    assert len(revisions) == 2, revisions  # both revisions answered during the rollout
    actions = [e.get("Action") for e in git.sluice_log(story.remote, story.model, rev="main")]
    assert "advance" in actions and actions[0] == "finalize"
    assert status.decision is not None and "gates pass" in status.decision.reason
    advance = next(e for e in git.sluice_log(story.remote, story.model, rev="main") if e.get("Action") == "advance")
    assert "on the same inputs" in advance.get("Reason"), advance.get("Reason")
    aliases = story.registry.aliases(story.model) or {}
    assert (aliases.get(CHAMPION), aliases.get(PREVIOUS)) == (v2, v1)
    story.at_rest()


def test_the_served_traffic_is_in_the_inference_log(story: Story) -> None:
    """The stand-in's router posts KServe's payload-logger CloudEvents; the receiver `sluice up`
    started pairs them and writes Parquet to the data bucket, per version and revision."""
    from pipelines.registry import s3_client
    from serving.inference_log.reader import read_log

    v1, v2 = story.good[0], story.good[1]
    s3 = s3_client(story.settings)
    deadline = time.monotonic() + 60
    logged = read_log(s3, story.settings.data_bucket, story.model)
    while time.monotonic() < deadline and not {v1, v2} <= set(logged["version"]):
        time.sleep(2)
        logged = read_log(s3, story.settings.data_bucket, story.model)
    assert {v1, v2} <= set(logged["version"]), logged["version"].value_counts()
    paired = logged.dropna(subset=["prediction"])
    assert len(paired) > 0 and paired["Store"].notna().all()
    assert (paired["prediction"] >= 0).all()


def test_a_forced_bad_version_is_rolled_back_and_written_back(story: Story) -> None:
    v2, bad = story.good[1], story.bad
    with Clients(story) as clients:
        pushed = story.push(version=bad, force="test: ship it anyway")
        assert pushed.ok, pushed.output
        story.wait(lambda s: s.decision is not None and s.decision.action in ("rollback", "restore"), "rolled back")
        zero_at = time.time() + 3  # the stand-in polls every second
        story.wait(stable_is(v2), "restored")
        time.sleep(2)
    entries = git.sluice_log(story.remote, story.model, rev="main")
    rolled = next(e for e in entries if e.get("Action") == "rollback" and e.get("Version") == bad)
    assert "predictions on the same inputs diverge" in rolled.get("Reason"), rolled.get("Reason")
    # After phase 1 was applied, no request reached the bad revision, through phases 2 and 3 too.
    bad_answers = [t for t, r in clients.answers if r == _canary_revision_of(story, bad)]
    assert not [t for t in bad_answers if t > zero_at], "requests reached the rolled-back revision"
    story.work.pull()
    release = story.work.release_path(story.model).read_text()
    assert f"version: {v2}  # written back by sluice CI: v{bad} rolled back" in release
    info = story.registry.get_version(story.model, bad)
    assert info is not None and info.tags.get(ROLLED_BACK_TAG)
    assert story.registry.get_alias(story.model, CHAMPION).version == v2  # type: ignore[union-attr]
    story.at_rest()


def standin_status(story: Story) -> dict:  # type: ignore[type-arg]
    import json
    import urllib.request

    with urllib.request.urlopen(story.settings.serve_url + "/sluice/standin") as resp:
        return dict(json.loads(resp.read()))


def delete_pod(story: Story, name: str) -> None:
    import urllib.request

    req = urllib.request.Request(story.settings.serve_url + f"/sluice/standin/pods/{name}", method="DELETE")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200


def bad_requests(story: Story, n: int) -> None:
    """Requests the model rejects (a store it does not know): 400s, the client's fault."""
    import httpx

    rows = story.rows.head(1).assign(Store=99_999)  # type: ignore[attr-defined]
    from pipelines.platform.traffic import v2_body

    body = v2_body(rows)
    with httpx.Client(timeout=30) as client:
        codes = {
            client.post(f"{story.settings.serve_url}/v2/models/{story.model}/infer", json=body).status_code
            for _ in range(n)
        }
    assert codes == {400}, codes


def _canary_revision_of(story: Story, version: str) -> str:
    import json
    import urllib.request

    with urllib.request.urlopen(story.settings.serve_url + "/sluice/standin") as resp:
        data = json.loads(resp.read())
    for pod in data["pods"]:
        if pod["version"] == version:
            return str(pod["revision"])
    state = json.loads((story.settings.state_dir / "standin" / "state.json").read_text())
    for rev in state["services"][story.model]["revisions"]:
        if rev["version"] == version:
            return str(rev["name"])
    return ""


def test_a_canary_with_server_errors_is_rolled_back(story: Story) -> None:
    v2, crashing = story.good[1], story.crashing
    with Clients(story):
        pushed = story.push(version=crashing, force="test: errors on purpose")
        assert pushed.ok, pushed.output

        def rollbacks() -> list[git.LogEntry]:
            entries = git.sluice_log(story.remote, story.model, rev="main")
            return [e for e in entries if e.get("Action") == "rollback" and e.get("Version") == crashing]

        # v2 is already stable when the push lands: wait for the rollback itself, then the restore.
        story.wait(lambda s: bool(rollbacks()), "rolled back")
        story.wait(stable_is(v2), "restored")
    rolled = rollbacks()[0]
    assert "server error rate" in rolled.get("Reason"), rolled.get("Reason")
    story.at_rest()


def test_a_resource_edit_rolls_out_a_new_revision_of_the_same_version(story: Story) -> None:
    v2 = story.good[1]
    before = story.status().stable
    assert before is not None and before.version == v2
    with Clients(story):
        story.work.pull()
        story.work.edit(
            f"gitops/models/{story.model}/release.yaml",
            lambda t: t.replace('limits: {cpu: "1", memory: 768Mi}', 'limits: {cpu: "1", memory: 1Gi}'),
        )
        story.work.commit(f"{story.model}: more memory")
        pushed = story.work.push()
        assert pushed.ok, pushed.output
        canary = story.wait(lambda s: s.phase == "canary", "canary of the same version")
        assert canary.canary is not None and canary.canary.version == v2 and canary.canary.revision != before.revision
        after = story.wait(
            lambda s: s.phase == "stable" and s.stable is not None and s.stable.revision != before.revision,
            "new revision",
        )
    assert after.stable is not None and after.stable.version == v2
    story.at_rest()


def test_an_edit_during_a_rollout_waits_for_it_and_naming_the_stable_aborts(story: Story) -> None:
    v1, _v2, v3 = story.good
    with Clients(story):
        assert story.push(version=v3).ok
        story.wait(lambda s: s.phase == "canary" and s.canary is not None and s.canary.version == v3, "canary v3")
        waiting = story.push(version=v1)  # arrives during the rollout of v3
        assert waiting.ok, waiting.output
        story.wait(stable_is(v3), "v3 finalized")
        story.wait(lambda s: s.phase == "canary" and s.canary is not None and s.canary.version == v1, "then v1")
        # Naming the stable version again takes the canary back at once.
        assert story.push(version=v3).ok
        status = story.wait(stable_is(v3), "aborted")
    entries = git.sluice_log(story.remote, story.model, rev="main")
    assert any(e.get("Action") == "rollback" and "names the stable" in e.get("Reason") for e in entries)
    assert status.canary is None
    story.at_rest()


def test_an_alias_in_the_release_file_follows_mlflow(story: Story) -> None:
    v2, v3 = story.good[1], story.good[2]
    assert story.registry.get_alias(story.model, CHAMPION).version == v3  # type: ignore[union-attr]
    pushed = story.push(alias=CHAMPION)  # champion is v3, which serves: nothing to do
    assert pushed.ok, pushed.output
    with Clients(story):
        story.registry.set_alias(story.model, CHAMPION, v2)  # a person (or the retrain) moves the alias
        story.wait(stable_is(v2), "synced to the moved alias")
    story.at_rest()
    assert story.registry.get_alias(story.model, CHAMPION).version == v2  # type: ignore[union-attr]


def test_a_job_queued_while_the_runner_is_down_runs_after_restart(story: Story) -> None:
    settings = story.settings
    assert stop_service(settings, "runner") is not None
    pushed = story.push(version=story.good[2])
    assert pushed.ok and any("queued job" in line for line in pushed.remote_lines())
    queued = ci_queue.pending(settings)
    assert queued, "the push queued nothing"
    up.start_runner(settings, print)
    assert running_pid(settings, "runner") is not None
    with Clients(story):
        story.wait(stable_is(story.good[2]), "the queued promotion ran")
    assert ci_queue.result(settings, queued[-1].id) is not None
    story.at_rest()
