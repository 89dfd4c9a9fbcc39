"""The rollout rule book (pipelines/rollout/decide.py): a pure function, tested case by case."""

from __future__ import annotations

import math

import pytest

from pipelines.gitops.release import Gates
from pipelines.gitops.status import Canary, Served, Status
from pipelines.rollout.decide import ClusterView, GateReport, RevisionWindow, decide, next_step

GATES = Gates(max_error_rate=0.01, max_p95_latency_ms=250, max_mean_relative_divergence=0.15, min_requests=100)
STEPS = [10, 50, 100]
S1 = Served(version="1", storage_uri="s3://b/1", revision="r1")
C2 = Canary(version="2", storage_uri="s3://b/2", revision="r2", percent=10)
CANARY = Status(model="m", phase="canary", stable=S1, canary=C2, window_start="2026-11-30T10:00:00Z")
GOOD = RevisionWindow(requests=400, p95_seconds=0.02, mean_prediction=5000)
STABLE_W = RevisionWindow(requests=3600, p95_seconds=0.02, mean_prediction=5100)
CLUSTER = ClusterView(applied=True, canary_ready=True, canary_percent=10, failure=None, canary_revision="m-00002")


def report(canary: RevisionWindow = GOOD, stable: RevisionWindow = STABLE_W) -> GateReport:
    return GateReport(canary, stable, "test window")


def at(percent: int, phase: str = "canary") -> Status:
    return CANARY.model_copy(update={"phase": phase, "canary": C2.model_copy(update={"percent": percent})})


@pytest.mark.parametrize(
    ("canary", "action", "reason"),
    [
        (RevisionWindow(requests=50, mean_prediction=5000), "hold", "50 of 100 canary requests"),
        (
            RevisionWindow(requests=400, server_errors=8, mean_prediction=5000),
            "rollback",
            "server error rate 2.00% > 1.00%",
        ),
        (
            RevisionWindow(requests=400, client_errors=300, p95_seconds=0.02, mean_prediction=5000),
            "advance",
            "client errors",
        ),
        (
            RevisionWindow(requests=400, p95_seconds=0.4, mean_prediction=5000),
            "rollback",
            "p95 latency 400.0 ms > 250 ms",
        ),
        (RevisionWindow(requests=400, p95_seconds=math.inf, mean_prediction=5000), "rollback", "p95 latency inf ms"),
        (RevisionWindow(requests=400, p95_seconds=0.02, mean_prediction=2500), "rollback", "diverges 51.0%"),
        (RevisionWindow(requests=400, p95_seconds=0.02), "hold", "no predictions from both revisions"),
        (GOOD, "advance", "gates pass over 400 requests"),
    ],
    ids=[
        "too few",
        "server errors",
        "4xx are not the model's fault",
        "slow",
        "slower than every bucket",
        "diverges",
        "nothing to compare",
        "all pass",
    ],
)
def test_a_canary_step(canary: RevisionWindow, action: str, reason: str) -> None:
    d = decide(at(10), GATES, STEPS, report(canary), CLUSTER)
    assert d.action == action and reason in d.reason, d.reason
    assert d.to_percent == {"hold": 10, "rollback": 0, "advance": 50}[action]


def test_finalize_at_the_last_step_without_stable_traffic() -> None:
    d = decide(at(100), GATES, STEPS, report(stable=RevisionWindow()), None)
    assert (d.action, d.to_percent) == ("finalize", None)
    assert "divergence not checked at 100%" in d.reason
    assert next_step(STEPS, 10) == 50 and next_step(STEPS, 100) is None


def test_nothing_to_do_without_a_rollout() -> None:
    assert decide(Status(model="m", phase="stable", stable=S1), GATES, STEPS, None, None).action == "none"
    assert decide(Status(model="m"), GATES, STEPS, None, None).action == "none"


def test_no_metrics_source_holds_and_says_so() -> None:
    d = decide(at(10), GATES, STEPS, None, None, "PROMETHEUS_URL is not set")
    assert d.action == "hold" and "PROMETHEUS_URL is not set" in d.reason and "stays at 10%" in d.reason


@pytest.mark.parametrize(
    ("view", "action", "reason"),
    [
        (ClusterView(False, True, 10, None), "hold", "not applied the last commit"),
        (ClusterView(True, False, 0, None), "hold", "not ready yet"),
        (ClusterView(True, False, 0, "PredictorReady: RevisionFailed oom"), "rollback", "failed in the cluster"),
    ],
)
def test_the_cluster_view_comes_first(view: ClusterView, action: str, reason: str) -> None:
    d = decide(at(10), GATES, STEPS, report(), view)
    assert d.action == action and reason in d.reason


def test_rollback_in_three_phases_never_routes_to_the_bad_revision() -> None:
    """0% first; then the stable spec back, still at 0%, until its new revision is ready; then 100%.
    Dropping the field while the restored revision is not ready would send everything to the latest
    *ready* revision: the rolled-back canary (KServe's ksvc_reconciler)."""
    rollback = at(0, "rollback")
    still = ClusterView(True, True, 10, None)
    assert decide(rollback, GATES, STEPS, None, still).action == "hold"
    assert decide(rollback, GATES, STEPS, None, ClusterView(True, True, 0, None)).action == "restore"
    assert decide(rollback, GATES, STEPS, None, None).action == "restore"
    restoring = at(0, "restoring")
    not_ready = ClusterView(True, False, 0, None)
    d = decide(restoring, GATES, STEPS, None, not_ready)
    assert d.action == "hold" and "restored revision" in d.reason and d.to_percent == 0
    d = decide(restoring, GATES, STEPS, None, ClusterView(True, True, 0, None))
    assert (d.action, d.to_percent) == ("complete", None)


def test_mirrored_rows_judge_divergence_on_the_same_inputs() -> None:
    def paired(div: float | None, rows: float) -> GateReport:
        return GateReport(GOOD, STABLE_W, "w", paired=div, paired_rows=rows, use_paired=True)

    d = decide(at(10), GATES, STEPS, paired(None, 0), CLUSTER)
    assert d.action == "hold" and "no mirrored rows" in d.reason
    d = decide(at(10), GATES, STEPS, paired(0.4, 300), CLUSTER)
    assert d.action == "rollback" and "predictions on the same inputs diverge 40.0%" in d.reason
    d = decide(at(10), GATES, STEPS, paired(0.01, 300), CLUSTER)
    assert d.action == "advance" and "divergence 1.0% on the same inputs" in d.reason


def test_pairing_predictions_in_the_router() -> None:
    from pipelines.platform.standin.router import paired_divergence, predictions

    body = b'{"model_name":"m","outputs":[{"name":"predictions","datatype":"FP32","shape":[3],"data":[100,200,0]}]}'
    assert predictions(body) == [100.0, 200.0, 0.0]
    assert predictions(b"not json") is None and predictions(b'{"outputs":[]}') is None
    total, rows = paired_divergence([110.0, 100.0, 5.0], [100.0, 200.0, 0.0])
    assert rows == 2 and abs(total - 0.6) < 1e-9  # 10% + 50%; the zero stable row is skipped


# --- the business-metric gate: realized RMSPE on actual sales ------------------------------------
ACCURACY = GATES.model_copy(update={"max_realized_rmspe_ratio": 0.05})


@pytest.mark.parametrize(
    ("gates", "realized", "action", "reason"),
    [
        (ACCURACY, (0.130, 0.120), "rollback", "realized RMSPE 0.1300 on actual sales > stable's 0.1200 x (1 + 0.05)"),
        (ACCURACY, (0.124, 0.120), "advance", "realized RMSPE 0.1240 vs stable 0.1200"),
        (ACCURACY, None, "advance", "gates pass over 400 requests"),  # no actuals for both yet: not a reason to hold
        (GATES, (0.5, 0.1), "advance", "gates pass over 400 requests"),  # not configured: not judged
    ],
    ids=["worse on the same store-days", "within the margin", "no actuals yet", "gate not set"],
)
def test_realized_accuracy_gate(gates: Gates, realized: tuple[float, float] | None, action: str, reason: str) -> None:
    measured = GateReport(GOOD, STABLE_W, "test window", realized=realized)
    decision = decide(at(10), gates, STEPS, measured, CLUSTER, None)
    assert decision.action == action and reason in decision.reason, decision.reason
    if gates is GATES:
        assert "realized" not in decision.reason


def test_realized_figures_come_from_the_newest_run_that_scored_both() -> None:
    from pipelines.rollout.metrics import pick_realized

    rows = [
        ({"version": "1", "feedback_run": "20261129T080000Z"}, 0.10),
        ({"version": "2", "feedback_run": "20261129T080000Z"}, 0.20),
        ({"version": "1", "feedback_run": "20261130T080000Z"}, 0.11),
        ({"version": "2", "feedback_run": "20261130T080000Z"}, 0.12),
        ({"version": "1", "feedback_run": "20261130T090000Z"}, 0.09),  # stable alone: other store-days
    ]
    assert pick_realized(rows, "2", "1") == (0.12, 0.11)
    assert pick_realized(rows[:1], "2", "1") is None
