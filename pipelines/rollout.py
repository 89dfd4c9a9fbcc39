"""`sluice rollout step|status`: advance, hold, finalize or roll back a canary, one commit per decision.

State comes from Git (the rendered manifest: version, `canaryTrafficPercent`, `sluice.dev/previous-*`
annotations; the release file: steps and gates), metrics from the runtime or Prometheus, and, when
a cluster is configured, the InferenceService status. `decide` is a pure function of those inputs;
`step` applies its Decision: edits only `canaryTrafficPercent` (or restores the stable manifest),
commits with `Sluice-*` trailers, pushes, and on finalize moves the MLflow aliases.

Decisions at a canary step (gates from release.yaml, computed on counters since the last decision):
  hold      fewer than `min_requests` canary requests (or no stable predictions to compare with)
  rollback  error rate, p95 latency or prediction divergence over its limit -> canaryTrafficPercent 0
  advance   all gates pass, a further step exists -> next step's percentage
  finalize  all gates pass at the last step -> drop the field; champion = new, previous = old
Rollback is two-phase: 0% first (traffic back on the rolled-out revision at once, the new spec
kept, as KServe wants), then the next `step` restores the stable spec without the field.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines import gitrepo
from pipelines.cluster import ServiceStatus
from pipelines.config import Settings
from pipelines.metrics_source import MetricsError, MetricsSnapshot, VersionMetrics
from pipelines.promote import (
    CHAMPION,
    PREVIOUS,
    ROLLED_BACK_TAG,
    GitState,
    ModelPaths,
    Outcome,
    clean_repo,
    commit_change,
    model_paths,
    read_state,
    refused,
)
from pipelines.registry_client import Registry, RegistryError
from pipelines.release import Gates, Release, ReleaseError, load_release
from pipelines.render import read_manifest, write_manifest

ACTIONS = ("advance", "finalize", "hold", "rollback", "restore", "none")


@dataclass(frozen=True)
class GateReport:
    canary_requests: float
    canary_error_rate: float | None
    canary_p95_ms: float | None
    stable_requests: float
    canary_mean: float | None
    stable_mean: float | None
    divergence: float | None
    window: str  # "since <sha>" or "since the canary started"

    def summary(self) -> str:
        def f(x: float | None, fmt: str) -> str:
            return "n/a" if x is None else ("inf" if math.isinf(x) else format(x, fmt))

        return (
            f"canary {self.canary_requests:.0f} requests, error rate {f(self.canary_error_rate, '.3%')}, "
            f"p95 {f(self.canary_p95_ms, '.1f')} ms, mean prediction {f(self.canary_mean, '.1f')} vs stable "
            f"{f(self.stable_mean, '.1f')} ({self.stable_requests:.0f} requests), divergence "
            f"{f(self.divergence, '.3f')} ({self.window})"
        )


@dataclass(frozen=True)
class Decision:
    action: str  # one of ACTIONS
    reason: str
    version: str | None  # the version the manifest names (the canary)
    stable: str | None
    from_percent: int | None
    to_percent: int | None  # None: field dropped
    report: GateReport | None = None


def gate_report(canary: VersionMetrics, stable: VersionMetrics, window: str) -> GateReport:
    p95 = canary.latency_quantile(0.95)
    cm, sm = canary.mean_prediction, stable.mean_prediction
    divergence = None
    if cm is not None and sm is not None:
        divergence = abs(cm - sm) / abs(sm) if sm != 0 else (0.0 if cm == 0 else math.inf)
    return GateReport(
        canary.total,
        canary.error_rate,
        None if p95 is None else p95 * 1000.0,
        stable.total,
        cm,
        sm,
        divergence,
        window,
    )


def next_step(steps: list[int], percent: int) -> int | None:
    """The next canary percentage after `percent`, or None when the rollout is complete."""
    later = [s for s in steps if s > percent]
    return later[0] if later else None


def decide_canary(state: GitState, gates: Gates, steps: list[int], report: GateReport) -> Decision:
    """The gates, in order: enough traffic, error rate, latency, divergence; then advance/finalize."""
    v, s, pct = state.version, state.stable_version, state.canary_percent or 0

    def d(action: str, reason: str, to: int | None) -> Decision:
        return Decision(action, reason, v, s, pct, to, report)

    if report.canary_requests < gates.min_requests:
        return d("hold", f"{report.canary_requests:.0f} of {gates.min_requests} canary requests so far", pct)
    if report.canary_error_rate is not None and report.canary_error_rate > gates.max_error_rate:
        return d("rollback", f"error rate {report.canary_error_rate:.2%} > {gates.max_error_rate:.2%}", 0)
    if report.canary_p95_ms is not None and report.canary_p95_ms > gates.max_p95_latency_ms:
        return d(
            "rollback",
            f"p95 latency {report.canary_p95_ms:.1f} ms > {gates.max_p95_latency_ms:g} ms",
            0,
        )
    if report.divergence is None:
        if pct < 100:
            return d("hold", "no predictions from both versions in this window to compare", pct)
        divergence_note = "divergence not checked at 100% (no stable traffic)"
    elif report.divergence > gates.max_mean_relative_divergence:
        return d(
            "rollback",
            f"mean prediction diverges {report.divergence:.1%} from stable "
            f"(> {gates.max_mean_relative_divergence:.1%})",
            0,
        )
    else:
        divergence_note = f"divergence {report.divergence:.1%}"
    passed = (
        f"gates pass over {report.canary_requests:.0f} requests: error rate {report.canary_error_rate or 0:.2%}, "
        f"p95 {report.canary_p95_ms or 0:.1f} ms, {divergence_note}"
    )
    nxt = next_step(steps, pct)
    if nxt is None:
        return d("finalize", passed, None)
    return d("advance", passed, nxt)


def decide(
    state: GitState,
    release: Release,
    current: MetricsSnapshot | None,
    baseline: MetricsSnapshot | None,
    window: str = "since the canary started",
    cluster: ServiceStatus | None = None,
) -> Decision:
    """Pure: what to do now. `current`/`baseline` are cumulative snapshots (baseline may be None)."""
    v, s, pct = state.version, state.stable_version, state.canary_percent
    if state.phase == "empty":
        return Decision("none", "nothing released yet", v, s, pct, pct)
    if state.phase == "stable":
        return Decision("none", f"no rollout in progress: v{v} serves 100%", v, s, pct, pct)
    if cluster is not None and not cluster.applied:
        return Decision("hold", "the cluster has not applied the last commit yet", v, s, pct, pct)
    if state.phase == "rollback":
        if cluster is not None and (cluster.latest_percent() or 0) > 0:
            return Decision("hold", "waiting for the cluster to route 0% to the rolled-back revision", v, s, pct, pct)
        return Decision("restore", f"restore the stable spec of v{s} after rolling back v{v}", v, s, 0, None)
    if cluster is not None and cluster.failure:
        return Decision("rollback", f"the canary revision failed in the cluster: {cluster.failure}", v, s, pct, 0)
    if current is None:
        raise ValueError("a canary step needs a metrics snapshot")
    canary = current.get(v).since(baseline.get(v) if baseline else None)
    stable = current.get(s).since(baseline.get(s) if baseline else None)
    return decide_canary(state, release.gates, release.rollout.steps, gate_report(canary, stable, window))


def last_baseline(repo: Path, model: str, version: str | None) -> tuple[MetricsSnapshot | None, str]:
    """The snapshot stored by the last advance of this rollout (holds do not reset the window)."""
    for entry in gitrepo.sluice_log(repo, model, max_count=200):
        if entry.get("Version") != version:
            break
        if entry.get("Action") == "advance" and entry.get("Metrics"):
            snap = MetricsSnapshot.from_trailer(entry.get("Metrics"))
            if snap is not None:
                return snap, f"since {entry.sha[:10]}"
        if entry.get("Action") == "promote":
            break
    return None, "since the canary started"


def stable_manifest_text(paths: ModelPaths, version: str) -> str | None:
    """The newest committed manifest that served `version` fully (no canaryTrafficPercent)."""
    import yaml

    for sha in gitrepo.file_history(paths.root, paths.manifest):
        text = gitrepo.show_file(paths.root, sha, paths.manifest)
        if not text:
            continue
        doc = yaml.safe_load(text)
        state = GitState(paths.model, doc if isinstance(doc, dict) else None)
        if state.phase == "stable" and state.version == version:
            return text
    return None


MetricsInput = MetricsSnapshot | Callable[[], MetricsSnapshot] | None


def step(
    repo: Path,
    registry: Registry | Callable[[], Registry] | None,
    model: str,
    metrics: MetricsInput,
    *,
    push: bool = False,
    cluster: ServiceStatus | None = None,
) -> Outcome:
    """Decide and apply one rollout step. `metrics` is read only when a canary needs it."""
    checked = clean_repo(repo, model)
    if isinstance(checked, Outcome):
        return checked
    paths, before = checked
    try:
        release = load_release(paths.root / paths.release)
    except ReleaseError as exc:
        return refused(str(exc))
    state = read_state(paths)

    snapshot: MetricsSnapshot | None = None
    baseline, window = None, "since the canary started"
    if state.phase == "canary" and (cluster is None or (cluster.applied and not cluster.failure)):
        try:
            snapshot = metrics() if callable(metrics) else metrics
        except MetricsError as exc:
            return Outcome("error", f"cannot read metrics, no decision taken: {exc}")
        if snapshot is None:
            return Outcome("error", "a canary is running and no metrics source was given (--metrics-url)")
        baseline, window = last_baseline(paths.root, model, state.version)
    decision = decide(state, release, snapshot, baseline, window, cluster)
    return apply(paths, registry, state, decision, snapshot, before, push)


def _registry(registry: Registry | Callable[[], Registry] | None) -> Registry | None:
    if registry is None:
        return None
    return registry() if callable(registry) else registry


def apply(
    paths: ModelPaths,
    registry: Registry | Callable[[], Registry] | None,
    state: GitState,
    decision: Decision,
    snapshot: MetricsSnapshot | None,
    before: str,
    push: bool,
) -> Outcome:
    model, v, s = paths.model, decision.version, decision.stable
    details = [decision.report.summary()] if decision.report else []
    if decision.action == "none":
        return Outcome("noop", decision.reason, details=details)

    keep = {x for x in (v, s) if x}
    trailers = {
        "Model": model,
        "Version": v or "",
        "Step": "",
        "Action": decision.action,
        "Reason": decision.reason,
        "Stable-Version": s or "",
        "Metrics": snapshot.to_trailer(keep) if snapshot is not None else "",
    }
    manifest = paths.root / paths.manifest

    if decision.action == "hold":
        last = gitrepo.sluice_log(paths.root, model, max_count=1)
        trailers["Step"] = str(decision.from_percent)
        trailers["Metrics"] = ""  # a hold never becomes the baseline of the next window
        if last and last[0].get("Action") == "hold" and last[0].get("Step") == trailers["Step"]:
            return Outcome(
                "hold", f"hold at {decision.from_percent}%: {decision.reason} (already recorded)", details=details
            )
        subject = f"{model}: hold v{v} at {decision.from_percent}%"
        try:
            sha, pushed = commit_change(paths, [], before, subject, "\n".join(details), trailers, push)
        except gitrepo.PushRejected as exc:
            return refused(str(exc))
        return Outcome("hold", f"hold at {decision.from_percent}%: {decision.reason}", sha, pushed, details)

    if decision.action == "restore":
        text = stable_manifest_text(paths, s or "")
        if text is None:
            return Outcome(
                "error",
                f"cannot find a committed manifest that served v{s} fully; restore it by hand "
                f"(sluice promote --version {s} after fixing the state)",
            )
        manifest.write_text(text, encoding="utf-8")
        trailers |= {"Version": s or "", "Step": "100", "Action": "rollback", "Rolled-Back-Version": v or ""}
        subject = f"{model}: rollback v{v}, restore v{s} (phase 2 of 2)"
        body = [f"Rolled back: v{v}", f"Restored the last fully rolled-out manifest of v{s}"]
    else:
        doc = read_manifest(manifest)
        predictor = doc["spec"]["predictor"]
        if decision.to_percent is None:
            predictor.pop("canaryTrafficPercent", None)
        else:
            predictor["canaryTrafficPercent"] = decision.to_percent
        write_manifest(manifest, doc)
        to = "100% (canaryTrafficPercent dropped)" if decision.to_percent is None else f"{decision.to_percent}%"
        trailers["Step"] = "100" if decision.to_percent is None else str(decision.to_percent)
        verb = {"advance": "advance", "finalize": "finalize", "rollback": "rollback"}[decision.action]
        subject = f"{model}: {verb} v{v} {decision.from_percent}% -> {to.split(' ')[0]}"
        if decision.action == "rollback":
            subject = f"{model}: rollback v{v} {decision.from_percent}% -> 0% (phase 1 of 2)"
        body = [f"Canary v{v}, stable v{s}: {decision.from_percent}% -> {to}", *details]

    try:
        sha, pushed = commit_change(paths, [paths.manifest], before, subject, "\n".join(body), trailers, push)
    except gitrepo.PushRejected as exc:
        return refused(str(exc))
    except gitrepo.GitError as exc:
        return Outcome("error", f"commit failed, nothing changed: {exc}")

    if decision.action == "finalize":
        reg = _registry(registry)
        try:
            if reg is None:
                raise RegistryError("no registry connection")
            if s:
                reg.set_alias(model, PREVIOUS, s)
            reg.set_alias(model, CHAMPION, v or "")
            details.append(f"aliases: {CHAMPION} -> v{v}" + (f", {PREVIOUS} -> v{s}" if s else ""))
        except RegistryError as exc:
            details.append(f"WARNING: committed, but the aliases were not moved: {exc}")
            return Outcome("error", f"finalized v{v} in Git; move {CHAMPION} to v{v} by hand", sha, pushed, details)
        return Outcome("finalize", f"finalized v{v} at 100%: {decision.reason}", sha, pushed, details)

    if decision.action == "restore":
        reg = _registry(registry)
        rolled_back_reason = _rollback_reason(paths, v)
        try:
            if reg is not None:
                reg.set_tag(model, v or "", ROLLED_BACK_TAG, rolled_back_reason or "rolled back by sluice")
                champion = reg.get_alias(model, CHAMPION)
                if champion is not None and champion.version == v and s:
                    reg.set_alias(model, CHAMPION, s)
                    details.append(f"alias {CHAMPION} moved back to v{s}")
        except RegistryError as exc:
            details.append(f"WARNING: restored in Git, but could not update the registry: {exc}")
        return Outcome("rollback", f"restored v{s} (rollback of v{v} complete)", sha, pushed, details)

    if decision.action == "rollback":
        details.append("next `sluice rollout step` restores the stable spec (phase 2)")
        return Outcome("rollback", f"rolled back v{v} to 0%: {decision.reason}", sha, pushed, details)
    return Outcome(
        "advance",
        f"advanced v{v} {decision.from_percent}% -> {decision.to_percent}%: {decision.reason}",
        sha,
        pushed,
        details,
    )


def _rollback_reason(paths: ModelPaths, version: str | None) -> str:
    for e in gitrepo.sluice_log(paths.root, paths.model, max_count=20):
        if e.get("Action") == "rollback" and e.get("Version") == version:
            return e.get("Reason")
    return ""


def status(repo: Path, model: str) -> str:
    paths = model_paths(repo, model)
    state = read_state(paths)
    lines = [f"{model}: {state.describe()}"]
    try:
        release = load_release(paths.root / paths.release)
        lines.append(f"rollout steps {release.rollout.steps}; gates {release.gates.model_dump()}")
        if state.phase == "canary":
            nxt = next_step(release.rollout.steps, state.canary_percent or 0)
            lines.append(f"next: {'finalize' if nxt is None else f'{nxt}%'} if the gates pass")
        elif state.phase == "rollback":
            lines.append(f"next: restore the stable spec of v{state.stable_version}")
    except ReleaseError as exc:
        lines.append(f"release file: {exc}")
    last = gitrepo.sluice_log(paths.root, model, max_count=1)
    if last:
        e = last[0]
        lines.append(
            f"last decision: {e.get('Action')} v{e.get('Version')} at {e.get('Step')}% "
            f"({e.sha[:10]}, {e.date}): {e.get('Reason')}"
        )
    return "\n".join(lines)


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.cluster import read_status
    from pipelines.metrics_source import read_metrics
    from pipelines.render import NAMESPACE

    model = args.model or settings.model_name
    if args.action == "status":
        try:
            print(status(Path(args.repo), model))
        except gitrepo.GitError as exc:
            print(f"error: {exc}")
            return 1
        return 0

    def registry() -> Registry:
        from pipelines.promote import connect

        return connect(settings)

    out = step(
        Path(args.repo),
        registry,
        model,
        lambda: read_metrics(model, args.metrics_url),
        push=args.push,
        cluster=read_status(model, NAMESPACE),
    )
    print(out.render())
    return out.exit_code
