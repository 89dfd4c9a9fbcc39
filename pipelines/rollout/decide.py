"""The rollout decision: a pure function of the status record, the release's gates, the canary
analysis of one time window and (when one is known) the cluster's view of the InferenceService.

Observing (metrics.py reads Prometheus, cluster.py reads the InferenceService) and applying
(apply.py writes Git and moves aliases) live elsewhere; here is only the rule book, in the order a
step checks it (docs/promotion.md explains each):

canary
  hold      the cluster has not applied the last commit, or the canary revision is not ready yet,
            or no metrics source is configured, or fewer than `min_requests` canary requests
  rollback  the canary revision failed in the cluster; or over the window the canary's server-side
            error rate (5xx, timeouts), p95 latency or the divergence of its mean prediction from the
            stable revision's (same window) is over its limit. Client errors (4xx) are the input's
            fault, not the model's: reported, never a reason to roll back.
  advance   every gate passes and a further step exists
  finalize  every gate passes at the last step: drop the field; champion = canary, previous = stable
rollback (canary at 0%)
  restore   once the cluster routes nothing to the canary: the stable spec goes back into the
            manifest, still with canaryTrafficPercent 0. KServe routes `latestRevision` to the
            latest *ready* revision: dropping the field now would send 100% to the rolled-back
            revision until the restored spec's new revision is ready (ksvc_reconciler.go).
restoring (stable spec at 0%)
  complete  once the restored revision is ready: drop the field, the stable version serves 100%
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.gitops.release import Gates
from pipelines.gitops.status import Status

ACTIONS = ("none", "hold", "advance", "finalize", "rollback", "restore", "complete")


@dataclass(frozen=True)
class RevisionWindow:
    """One revision's traffic over the gate window (Prometheus increases, summed over pods)."""

    requests: float = 0.0  # every request that reached the revision, any outcome
    server_errors: float = 0.0  # 5xx from the runtime, plus failures the router saw (timeouts, resets)
    client_errors: float = 0.0  # 4xx: the input's fault
    p95_seconds: float | None = None
    mean_prediction: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests > 0 else None

    @property
    def client_error_rate(self) -> float | None:
        return self.client_errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class GateReport:
    canary: RevisionWindow
    stable: RevisionWindow
    window: str  # e.g. "2026-11-30T10:00:00Z .. 10:02:10Z (130 s), prometheus http://..."
    paired: float | None = None  # mean |canary - stable| / |stable| over mirrored rows (same inputs)
    paired_rows: float = 0.0
    use_paired: bool = False  # the release asks for mirroring: judge on the same inputs
    # (canary, stable) realized RMSPE on the same store-days, from the newest `sluice feedback` run that
    # scored both versions; None: no actuals for both yet (or the gate is not configured)
    realized: tuple[float, float] | None = None

    @property
    def divergence(self) -> float | None:
        if self.use_paired:
            return self.paired if self.paired_rows > 0 else None
        cm, sm = self.canary.mean_prediction, self.stable.mean_prediction
        if cm is None or sm is None:
            return None
        if sm == 0:
            return 0.0 if cm == 0 else math.inf
        return abs(cm - sm) / abs(sm)

    def summary(self) -> str:
        def f(x: float | None, fmt: str) -> str:
            return "n/a" if x is None else ("inf" if math.isinf(x) else format(x, fmt))

        c, s = self.canary, self.stable
        p95 = None if c.p95_seconds is None else c.p95_seconds * 1000
        how = f"paired over {self.paired_rows:.0f} mirrored rows" if self.use_paired else "of the means"
        return (
            f"canary {c.requests:.0f} requests, server errors {f(c.error_rate, '.2%')}, client errors "
            f"{f(c.client_error_rate, '.2%')} (stable {f(s.client_error_rate, '.2%')}), p95 {f(p95, '.1f')} ms, "
            f"mean prediction {f(c.mean_prediction, '.1f')} vs stable {f(s.mean_prediction, '.1f')} "
            f"({s.requests:.0f} requests), divergence {f(self.divergence, '.3f')} ({how}); window {self.window}"
        )


@dataclass(frozen=True)
class ClusterView:
    """What the cluster (or the local stand-in) says about the InferenceService; see cluster.py."""

    applied: bool  # it runs the spec of the manifest at HEAD (same version, storage URI and traffic)
    canary_ready: bool  # the newest revision is ready (latestReadyRevision == latestCreatedRevision)
    canary_percent: int | None  # the share the newest revision gets now
    failure: str | None  # a failed revision, with reason and message
    canary_revision: str | None = None
    stable_revision: str | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # one of ACTIONS
    reason: str
    to_percent: int | None  # the canary's share after this decision (None: the field dropped)
    report: GateReport | None = None


def next_step(steps: list[int], percent: int) -> int | None:
    """The next canary percentage after `percent`, or None when the rollout is complete."""
    later = [s for s in steps if s > percent]
    return later[0] if later else None


def decide_canary(percent: int, gates: Gates, steps: list[int], report: GateReport) -> Decision:
    """The gates, in order: enough traffic, server errors, latency, divergence; then advance/finalize."""
    c = report.canary

    def d(action: str, reason: str, to: int | None) -> Decision:
        return Decision(action, reason, to, report)

    if c.requests < gates.min_requests:
        return d("hold", f"{c.requests:.0f} of {gates.min_requests} canary requests so far", percent)
    if c.error_rate is not None and c.error_rate > gates.max_error_rate:
        return d("rollback", f"server error rate {c.error_rate:.2%} > {gates.max_error_rate:.2%}", 0)
    p95_ms = None if c.p95_seconds is None else c.p95_seconds * 1000.0
    if p95_ms is not None and p95_ms > gates.max_p95_latency_ms:
        return d("rollback", f"p95 latency {p95_ms:.1f} ms > {gates.max_p95_latency_ms:g} ms", 0)
    divergence = report.divergence
    if divergence is None:
        if report.use_paired and percent < 100:
            return d("hold", "no mirrored rows answered by both revisions in this window yet", percent)
        if percent < 100:
            return d("hold", "no predictions from both revisions in this window to compare", percent)
        divergence_note = "divergence not checked at 100% (no stable traffic)"
    elif divergence > gates.max_mean_relative_divergence:
        what = "predictions on the same inputs diverge" if report.use_paired else "mean prediction diverges"
        return d(
            "rollback",
            f"{what} {divergence:.1%} from stable (> {gates.max_mean_relative_divergence:.1%})",
            0,
        )
    else:
        divergence_note = f"divergence {divergence:.1%}" + (" on the same inputs" if report.use_paired else "")
    realized_note = ""
    if gates.max_realized_rmspe_ratio is not None and report.realized is not None:
        canary_rmspe, stable_rmspe = report.realized
        limit = stable_rmspe * (1 + gates.max_realized_rmspe_ratio)
        if canary_rmspe > limit:
            return d(
                "rollback",
                f"realized RMSPE {canary_rmspe:.4f} on actual sales > stable's {stable_rmspe:.4f} x "
                f"(1 + {gates.max_realized_rmspe_ratio:g}) on the same store-days",
                0,
            )
        realized_note = f", realized RMSPE {canary_rmspe:.4f} vs stable {stable_rmspe:.4f}"
    passed = (
        f"gates pass over {c.requests:.0f} requests: server errors {c.error_rate or 0:.2%}, "
        f"p95 {p95_ms or 0:.1f} ms, {divergence_note}{realized_note}"
    )
    if (c.client_error_rate or 0) > (report.stable.client_error_rate or 0) + 0.05:
        passed += f" (note: client errors {c.client_error_rate:.1%} on the canary, more than on stable)"
    nxt = next_step(steps, percent)
    return d("finalize", passed, None) if nxt is None else d("advance", passed, nxt)


def decide(
    status: Status,
    gates: Gates,
    steps: list[int],
    report: GateReport | None,
    cluster: ClusterView | None,
    metrics_problem: str | None = None,
) -> Decision:
    """What to do now. `report` is None when no metrics could be read (`metrics_problem` says why)."""
    canary = status.canary
    percent = canary.percent if canary else None
    if not status.in_rollout or canary is None:
        return Decision("none", f"no rollout in progress ({status.describe()})", percent)
    if cluster is not None and not cluster.applied:
        return Decision("hold", "the cluster has not applied the last commit yet (sync pending)", percent)

    if status.phase == "rollback":
        if cluster is not None and (cluster.canary_percent or 0) > 0:
            return Decision("hold", "waiting for the cluster to route 0% to the rolled-back revision", 0)
        return Decision("restore", f"restore the spec of v{status.stable.version if status.stable else '?'}", 0)
    if status.phase == "restoring":
        if cluster is not None and not cluster.canary_ready:
            return Decision("hold", "waiting for the restored revision to be ready before it takes traffic", 0)
        return Decision("complete", "the restored revision is ready: it serves 100%", None)

    if cluster is not None and cluster.failure:
        return Decision("rollback", f"the canary revision failed in the cluster: {cluster.failure}", 0)
    if cluster is not None and not cluster.canary_ready:
        return Decision("hold", "the canary revision is not ready yet", percent)
    if report is None:
        return Decision(
            "hold",
            f"no metrics, so no decision: {metrics_problem or 'no metrics source'}; the canary stays at {percent}%",
            percent,
        )
    return decide_canary(percent or 0, gates, steps, report)
