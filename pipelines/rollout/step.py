"""One rollout step for one model: observe (cluster, Prometheus), decide, apply.

Without a canary in progress there is nothing to observe and the step is a no-op that succeeds.
With one, a missing metrics source is a hold (recorded once, the step succeeds and says so); a
configured source that cannot be read is an error (the step fails: someone should look).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from pipelines.gitops.commit import Outcome, refused
from pipelines.gitops.manifest import NAMESPACE
from pipelines.gitops.state import ModelState
from pipelines.gitops.status import Status, now, parse_time
from pipelines.gitops.write import open_model
from pipelines.registry import Registry
from pipelines.rollout import apply, cluster, metrics
from pipelines.rollout.decide import ClusterView, Decision, GateReport, decide


def observe_cluster(state: ModelState, env: Mapping[str, str]) -> ClusterView | None:
    obj = cluster.read_service(state.model, NAMESPACE, env)
    if obj is None or state.manifest is None:
        return None
    return cluster.view(obj, state.manifest)


def observe_metrics(
    status: Status,
    model: str,
    prometheus: str | None,
    view: ClusterView | None,
    end: str,
    paired: bool = False,
    realized: bool = False,
) -> tuple[GateReport | None, str | None]:
    """The gate report of the current window, or None and why there is none."""
    canary, stable = status.canary, status.stable
    if status.phase != "canary" or canary is None or stable is None:
        return None, None
    if not prometheus:
        return None, "no metrics source: PROMETHEUS_URL is not set"
    if view is not None and view.canary_revision and view.stable_revision:
        sel = metrics.Selector("revision", view.canary_revision, view.stable_revision)
    elif canary.version != stable.version:
        sel = metrics.Selector("version", canary.version, stable.version)
    else:
        return None, "canary and stable run the same version and no cluster names their revisions"
    start = parse_time(status.window_start or end)
    report = metrics.gate_report(prometheus, model, sel, start, parse_time(end), paired)
    if realized and canary.version != stable.version:
        scored = metrics.realized(prometheus, model, canary.version, stable.version, parse_time(end))
        report = dataclasses.replace(report, realized=scored)
    return report, None


def step(
    repo: Path,
    model: str,
    registry: Registry,
    *,
    prometheus: str | None,
    push: bool,
    env: Mapping[str, str],
    clock: Callable[[], str] = now,
) -> Outcome:
    opened = open_model(repo, model)
    if isinstance(opened, Outcome):
        return opened
    tx, state = opened
    if not state.status.in_rollout:
        return Outcome("noop", f"{model}: no rollout in progress ({state.status.describe()})")
    if state.release is None:
        return refused(f"{model}: a rollout is in progress but {state.release_error}; fix the release file")
    try:
        view = observe_cluster(state, env)
        gates = state.release.gates
        paired = gates.mirror_percent > 0
        realized = gates.max_realized_rmspe_ratio is not None
        report, problem = observe_metrics(state.status, model, prometheus, view, clock(), paired, realized)
    except (cluster.ClusterError, metrics.MetricsError) as exc:
        return Outcome("error", f"{model}: cannot observe the canary, no decision taken: {exc}")
    decision: Decision = decide(state.status, state.release.gates, state.release.rollout.steps, report, view, problem)
    return apply.apply(apply.Step(tx, state, registry, push, clock), decision)
