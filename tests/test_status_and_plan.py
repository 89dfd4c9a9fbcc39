"""The CI-owned status record, what a release file asks of CI (plan), and when the records agree."""

from __future__ import annotations

import pytest

from pipelines.gitops.agreement import disagreements
from pipelines.gitops.manifest import ResolvedVersion, render_inference_service, revision_digest, set_traffic
from pipelines.gitops.release import parse_release
from pipelines.gitops.state import ModelPaths, ModelState
from pipelines.gitops.status import Canary, Decision, Served, Status, StatusError, dump_status, parse_status
from pipelines.promotion.plan import plan

GATES = {"max_error_rate": 0.01, "max_p95_latency_ms": 250, "max_mean_relative_divergence": 0.15, "min_requests": 20}
RELEASE = parse_release({"model": "rossmann", "version": 2, "gates": GATES})
V1 = ResolvedVersion("rossmann", "1", "run1", "s3://b/1/artifacts")
V2 = ResolvedVersion("rossmann", "2", "run2", "s3://b/2/artifacts")
DOC1 = render_inference_service(RELEASE, V1, None)
DOC2 = render_inference_service(RELEASE, V2, None)
S1 = Served(version="1", run_id="run1", storage_uri=V1.storage_uri, revision=revision_digest(DOC1))
S2 = Served(version="2", run_id="run2", storage_uri=V2.storage_uri, revision=revision_digest(DOC2))
STABLE = Status(model="rossmann", phase="stable", stable=S1)
CANARY = Status(model="rossmann", phase="canary", stable=S1, canary=Canary(**S2.model_dump(), percent=10))


def test_status_round_trips_and_describes_itself() -> None:
    st = CANARY.model_copy(update={"decision": Decision(action="advance", reason="ok", at="2026-11-30T10:00:00Z")})
    text = dump_status(st)
    assert text.startswith("# Written by sluice CI")
    assert parse_status(text, "rossmann", "status.yaml") == st
    assert st.describe() == "v2 canary at 10% (v1 serves the rest)"
    assert parse_status(None, "rossmann", "x").describe() == "nothing released yet"
    assert STABLE.describe() == "v1 serves 100%"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model: other\nphase: stable\n", "records model 'other'"),
        ("model: rossmann\nphase: dancing\n", "not a valid status record"),
        ("model: rossmann\nphse: stable\n", "not a valid status record"),
        ("[", "not a valid status record"),
    ],
)
def test_a_broken_status_record_names_the_file(text: str, match: str) -> None:
    with pytest.raises(StatusError, match=match):
        parse_status(text, "rossmann", "gitops/models/rossmann/status.yaml")


@pytest.mark.parametrize(
    ("status", "version", "doc", "action"),
    [
        (Status(model="rossmann"), "1", DOC1, "release"),
        (STABLE, "1", DOC1, "noop"),
        (STABLE, "2", DOC2, "canary"),
        (STABLE, "1", render_inference_service(RELEASE.model_copy(update={"min_replicas": 2}), V1, None), "canary"),
        (CANARY, "2", DOC2, "noop"),
        (CANARY, "1", DOC1, "abort"),
        (CANARY, "3", DOC2, "wait"),
        (CANARY.model_copy(update={"phase": "rollback"}), "1", DOC1, "wait"),
        (CANARY.model_copy(update={"phase": "restoring"}), "2", DOC2, "wait"),
    ],
    ids=[
        "first release",
        "already serves",
        "new version",
        "same version, new settings",
        "canary goes on",
        "names the stable again",
        "edit during rollout",
        "edit during rollback",
        "canary again during restore",
    ],
)
def test_plan(status: Status, version: str, doc: dict, action: str) -> None:
    assert plan(status, version, revision_digest(doc)).action == action


def state(status: Status, manifest: dict | None, version: str | None = "1") -> ModelState:
    rel = RELEASE.model_copy(update={"version": version})
    return ModelState(ModelPaths("rossmann"), rel, None, None, manifest, status)


def test_agreement() -> None:
    assert disagreements(state(STABLE, DOC1), {"champion": "1"}) == []
    assert disagreements(state(CANARY, set_traffic(DOC2, 10), "2"), {"champion": "1"}) == []
    problems = disagreements(state(STABLE, set_traffic(DOC1, 10)), {"champion": "2"})
    assert any("canaryTrafficPercent 10" in p for p in problems)
    assert any("alias champion is v2" in p for p in problems)
    assert any("the manifest serves v2" in p for p in disagreements(state(STABLE, DOC2, "2"), None))
    assert disagreements(state(STABLE, DOC1, "2"), None) == []  # an edit CI has not rendered yet: pending
    rollback = CANARY.model_copy(
        update={"phase": "rollback", "canary": CANARY.canary.model_copy(update={"percent": 0})}
    )
    assert any(
        "still names the rolled-back v2" in p for p in disagreements(state(rollback, set_traffic(DOC2, 0), "2"), None)
    )
    assert disagreements(state(rollback, set_traffic(DOC2, 0), "1"), None) == []
