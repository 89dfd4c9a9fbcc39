"""Apply a rollout Decision: one function per action, each one commit (manifest + status record).

Registry changes are made before the commit that records them, and put back if that commit cannot
land: a finalize moves `champion`/`previous` first, so a step killed between the two leaves Git
still showing the canary, and the next step finalizes again (idempotent) instead of leaving the
aliases behind Git. A rollback tags the version `sluice.rolled_back` (so `sluice ci sync` never
promotes it again by itself) and moves `champion` back if it named the rolled-back version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipelines.gitops import git
from pipelines.gitops.commit import Outcome, Transaction
from pipelines.gitops.manifest import parse_manifest_text, revision_digest, set_traffic
from pipelines.gitops.release import ReleaseError, write_back_version
from pipelines.gitops.state import ModelState
from pipelines.gitops.status import Decision as Record
from pipelines.gitops.status import Served, Status, now
from pipelines.gitops.write import commit_state, write_state
from pipelines.registry import CHAMPION, PREVIOUS, ROLLED_BACK_TAG, Registry, RegistryError, move_aliases
from pipelines.rollout.decide import Decision


@dataclass(frozen=True)
class Step:
    tx: Transaction
    state: ModelState
    registry: Registry
    push: bool
    clock: Callable[[], str] = now


def _trailers(step: Step, action: str, version: str, percent: int | None, reason: str) -> dict[str, str]:
    stable = step.state.status.stable
    return {
        "Model": step.state.model,
        "Version": version,
        "Step": "100" if percent is None else str(percent),
        "Action": action,
        "Reason": reason,
        "Stable-Version": stable.version if stable else "",
    }


def _record(status: Status, action: str, reason: str, at: str, **changes: object) -> Status:
    return status.model_copy(update={"decision": Record(action=action, reason=reason, at=at), **changes})


def hold(step: Step, decision: Decision) -> Outcome:
    """Record a hold once per step (a commit every tick would bury the history)."""
    status, canary = step.state.status, step.state.status.canary
    assert canary is not None
    details = [decision.report.summary()] if decision.report else []
    last = status.decision
    if last is not None and last.action == "hold" and canary.percent == (decision.to_percent or 0):
        return Outcome("hold", f"hold v{canary.version} at {canary.percent}%: {decision.reason}", details=details)
    at = step.clock()
    write_state(step.tx, step.state.paths, None, _record(status, "hold", decision.reason, at))
    return commit_state(
        step.tx,
        action="hold",
        message=f"hold v{canary.version} at {canary.percent}%: {decision.reason}",
        subject=f"{step.state.model}: hold v{canary.version} at {canary.percent}%",
        body=details,
        trailers=_trailers(step, "hold", canary.version, canary.percent, decision.reason),
        push=step.push,
        details=details,
    )


def advance(step: Step, decision: Decision) -> Outcome:
    status, canary, manifest = step.state.status, step.state.status.canary, step.state.manifest
    assert canary is not None and manifest is not None and decision.to_percent is not None
    at = step.clock()
    to = decision.to_percent
    new_status = _record(
        status,
        "advance",
        decision.reason,
        at,
        canary=canary.model_copy(update={"percent": to}),
        window_start=at,
    )
    write_state(step.tx, step.state.paths, set_traffic(manifest, to), new_status)
    details = [decision.report.summary()] if decision.report else []
    return commit_state(
        step.tx,
        action="advance",
        message=f"advanced v{canary.version} {canary.percent}% -> {to}%: {decision.reason}",
        subject=f"{step.state.model}: advance v{canary.version} {canary.percent}% -> {to}%",
        body=[f"Canary v{canary.version}, stable v{status.stable.version if status.stable else '?'}", *details],
        trailers=_trailers(step, "advance", canary.version, to, decision.reason),
        push=step.push,
        details=details,
    )


def finalize(step: Step, decision: Decision) -> Outcome:
    status, canary, manifest = step.state.status, step.state.status.canary, step.state.manifest
    assert canary is not None and manifest is not None
    model, stable = step.state.model, status.stable
    moves = {CHAMPION: canary.version}
    if stable is not None and stable.version != canary.version:
        moves[PREVIOUS] = stable.version
    try:
        undo = move_aliases(step.registry, model, moves)
    except RegistryError as exc:
        return Outcome("error", f"cannot finalize v{canary.version}: the aliases could not be moved: {exc}")
    at = step.clock()
    served = Served(**canary.model_dump(include=set(Served.model_fields)))
    new_status = _record(
        status, "finalize", decision.reason, at, phase="stable", stable=served, canary=None, window_start=None
    )
    write_state(step.tx, step.state.paths, set_traffic(manifest, None), new_status)
    details = [decision.report.summary()] if decision.report else []
    details.append(", ".join(f"alias {a} -> v{v}" for a, v in moves.items()))
    out = commit_state(
        step.tx,
        action="finalize",
        message=f"finalized v{canary.version} at 100%: {decision.reason}",
        subject=f"{model}: finalize v{canary.version} at 100%",
        body=[
            f"Canary v{canary.version} is the rolled-out revision; v{stable.version if stable else '?'} retires",
            *details,
        ],
        trailers=_trailers(step, "finalize", canary.version, None, decision.reason),
        push=step.push,
        details=details,
    )
    if out.failed:
        out.details.extend(f"WARNING: {problem}" for problem in undo())
    return out


def rollback(step: Step, decision: Decision, *, judged: bool = True) -> Outcome:
    """Phase 1: the canary to 0% (spec kept, as KServe wants), the version tagged rolled back (unless
    a person took it back, `judged=False`: nothing was wrong with it), and the release file written
    back to the stable version when it still names the rolled-back one."""
    status, canary, manifest = step.state.status, step.state.status.canary, step.state.manifest
    assert canary is not None and manifest is not None
    model, stable = step.state.model, status.stable
    stable_v = stable.version if stable else ""
    reason = decision.reason
    details: list[str] = []
    try:
        if judged and canary.version != stable_v:
            step.registry.set_tag(model, canary.version, ROLLED_BACK_TAG, f"{now()}: {reason}"[:500])
            champion = step.registry.get_alias(model, CHAMPION)
            if champion is not None and champion.version == canary.version and stable_v:
                step.registry.set_alias(model, CHAMPION, stable_v)
                details.append(f"alias {CHAMPION} moved back to v{stable_v}")
    except RegistryError as exc:
        return Outcome("error", f"cannot roll back v{canary.version}: the registry could not be updated: {exc}")
    at = step.clock()
    new_status = _record(
        status,
        "rollback",
        reason,
        at,
        phase="rollback",
        canary=canary.model_copy(update={"percent": 0}),
        window_start=at,
    )
    write_state(step.tx, step.state.paths, set_traffic(manifest, 0), new_status)
    release = step.state.release
    if release is not None and release.version == canary.version and stable_v and canary.version != stable_v:
        try:
            text = write_back_version(
                step.state.release_text or "",
                stable_v,
                f"v{canary.version} rolled back: {reason}",
                step.state.paths.release,
            )
            step.tx.write(step.state.paths.release, text)
            details.append(f"{step.state.paths.release} written back to version {stable_v}")
        except ReleaseError as exc:
            details.append(f"WARNING: could not write back {step.state.paths.release}: {exc}")
    if decision.report:
        details.insert(0, decision.report.summary())
    trailers = _trailers(step, "rollback", canary.version, 0, reason)
    trailers["Rolled-Back-Version"] = canary.version
    return commit_state(
        step.tx,
        action="rollback",
        message=f"rolled back v{canary.version} to 0%: {reason}",
        subject=f"{model}: rollback v{canary.version} {canary.percent}% -> 0% (1/3)",
        body=[f"All traffic back on v{stable_v}; the stable spec is restored next.", *details],
        trailers=trailers,
        push=step.push,
        details=details,
    )


def stable_manifest_text(step: Step) -> str | None:
    """The newest committed manifest whose revision is the stable one (its traffic field aside)."""
    stable = step.state.status.stable
    if stable is None:
        return None
    path = step.state.paths.manifest
    for sha in git.file_history(step.tx.root, path):
        text = git.show_file(step.tx.root, sha, path)
        if not text:
            continue
        try:
            doc = parse_manifest_text(text, f"{path}@{sha[:10]}")
        except ValueError:
            continue
        if revision_digest(doc) == stable.revision:
            return text
    return None


def restore(step: Step, decision: Decision) -> Outcome:
    """Phase 2: the stable spec back in the manifest, still at 0% until its new revision is ready."""
    status, canary = step.state.status, step.state.status.canary
    assert canary is not None and status.stable is not None
    text = stable_manifest_text(step)
    if text is None:
        return Outcome(
            "error",
            f"cannot find a committed manifest of the stable revision of v{status.stable.version}; "
            "restore it by hand (render release.yaml with that version) and push",
        )
    doc = set_traffic(parse_manifest_text(text, step.state.paths.manifest), 0)
    at = step.clock()
    new_status = _record(status, "restore", decision.reason, at, phase="restoring")
    write_state(step.tx, step.state.paths, doc, new_status)
    return commit_state(
        step.tx,
        action="restore",
        message=f"restored the spec of v{status.stable.version} at 0% (rollback of v{canary.version}, phase 2)",
        subject=f"{step.state.model}: rollback v{canary.version}, restore v{status.stable.version} at 0% (2/3)",
        body=["The restored spec is a new revision; it takes traffic once ready (phase 3)."],
        trailers=_trailers(step, "restore", status.stable.version, 0, decision.reason),
        push=step.push,
    )


def complete(step: Step, decision: Decision) -> Outcome:
    """Phase 3: drop the traffic field; the stable version serves 100% from its restored revision."""
    status, canary, manifest = step.state.status, step.state.status.canary, step.state.manifest
    assert canary is not None and status.stable is not None and manifest is not None
    at = step.clock()
    new_status = _record(
        status,
        "rollback",
        f"rollback of v{canary.version} complete",
        at,
        phase="stable",
        canary=None,
        window_start=None,
    )
    write_state(step.tx, step.state.paths, set_traffic(manifest, None), new_status)
    trailers = _trailers(step, "rollback", status.stable.version, None, f"rollback of v{canary.version} complete")
    trailers["Rolled-Back-Version"] = canary.version
    return commit_state(
        step.tx,
        action="complete",
        message=f"v{status.stable.version} serves 100% again (rollback of v{canary.version} complete)",
        subject=f"{step.state.model}: v{status.stable.version} at 100%, rollback of v{canary.version} done (3/3)",
        body=[decision.reason],
        trailers=trailers,
        push=step.push,
    )


APPLY: dict[str, Callable[[Step, Decision], Outcome]] = {
    "hold": hold,
    "advance": advance,
    "finalize": finalize,
    "rollback": rollback,
    "restore": restore,
    "complete": complete,
}


def apply(step: Step, decision: Decision) -> Outcome:
    if decision.action == "none":
        return Outcome("noop", decision.reason)
    return APPLY[decision.action](step, decision)
