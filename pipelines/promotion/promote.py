"""Render what a release file asks for: `sluice ci promote` (on a push) and `sluice ci sync` (on a
schedule, for release files that name an alias), one model at a time.

Reads the model's state from the checkout, resolves and checks what the release file names
(checks.py), decides with plan.py, and commits the rendered InferenceService and the status record
together. Nothing is written unless every check passed; a refusal changes nothing in Git or the
registry and says why (the CI job fails with that reason). A person overrides a failed evaluation
gate with a `Sluice-Force: <reason>` trailer on the commit that changes the release file; the reason
is recorded in the status record and the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.gitops import git
from pipelines.gitops.commit import Outcome, Transaction, refused
from pipelines.gitops.manifest import ResolvedVersion, render_inference_service, revision_digest, set_traffic
from pipelines.gitops.state import ModelState
from pipelines.gitops.status import Canary, Served, Status, now
from pipelines.gitops.status import Decision as Record
from pipelines.gitops.write import commit_state, open_model, write_state
from pipelines.promotion.checks import Candidate, GateRunner, Refusal, check_candidate, check_gate, gate_baseline
from pipelines.promotion.plan import plan
from pipelines.registry import CHAMPION, Registry, RegistryError, move_aliases
from pipelines.rollout import apply as rollout_apply
from pipelines.rollout.decide import Decision

FORCE_TRAILER = "Force"  # Sluice-Force: <reason>


@dataclass(frozen=True)
class Context:
    registry: Registry
    s3: Any
    gate: GateRunner
    push: bool = False
    clock: Callable[[], str] = now


def force_reason(root: Path, release_path: str, rev: str = "HEAD") -> str | None:
    """The `Sluice-Force:` reason of the newest commit that changed the release file, if any."""
    last = git.last_commit_touching(root, rev, release_path)
    reason = (last.trailers.get(FORCE_TRAILER) or "").strip() if last else ""
    return reason or None


def promote(repo: Path, model: str, ctx: Context, *, only_alias: bool = False) -> Outcome:
    """Make Git serve what `model`'s release file names (or say why not, changing nothing)."""
    opened = open_model(repo, model)
    if isinstance(opened, Outcome):
        return opened
    tx, state = opened
    release, status = state.release, state.status
    if release is None:
        return refused(state.release_error or f"{model}: no release file")
    if only_alias and release.alias is None:
        return Outcome("noop", f"{model}: the release file names a version, not an alias: nothing to sync")
    if not release.released:
        if status.phase == "empty":
            return Outcome("noop", f"{model}: the release file names no version or alias yet: nothing to release")
        return refused(
            f"{state.paths.release} names no version or alias while {status.describe()}; name the version to "
            "serve (to stop serving a model, delete its folder: ArgoCD prunes the InferenceService)"
        )

    checked = check_candidate(ctx.registry, ctx.s3, model, release.ref, by_alias=release.alias is not None)
    if isinstance(checked, Refusal):
        return refused(f"{model}: {release.requested}: {checked.reason}")
    resolved = ResolvedVersion(model, checked.version, checked.info.run_id, checked.storage_uri)
    full = render_inference_service(release, resolved, None)
    revision = revision_digest(full)
    decision = plan(status, checked.version, revision)

    if decision.action in ("noop", "wait"):
        return Outcome(decision.action, f"{model}: {decision.reason}")
    if decision.action == "abort":
        step = rollout_apply.Step(tx, state, ctx.registry, ctx.push, ctx.clock)
        return rollout_apply.rollback(step, Decision("rollback", decision.reason, 0), judged=False)

    forced = force_reason(tx.root, state.paths.release)
    same_version = status.stable is not None and status.stable.version == checked.version
    if same_version:
        passed, gate_reason = True, "same version with new settings: nothing to evaluate"
    else:
        baseline = gate_baseline(ctx.registry, model, status, checked.version)
        passed, gate_reason = check_gate(ctx.registry, model, checked.info, baseline, ctx.gate)
        if not passed and not forced:
            return refused(
                f"{model} v{checked.version} fails the evaluation gate against v{baseline}: {gate_reason}",
                "to override it, commit the release file with a trailer `Sluice-Force: <why>` (it is recorded)",
            )
    return _start(tx, state, ctx, checked, release.requested, full, revision, decision.action, gate_reason, forced)


def _start(
    tx: Transaction,
    state: ModelState,
    ctx: Context,
    cand: Candidate,
    requested: str,
    full: dict[str, Any],
    revision: str,
    action: str,
    gate_reason: str,
    forced: str | None,
) -> Outcome:
    """Commit the first release (100%) or the start of a canary."""
    model, status, release = state.model, state.status, state.release
    assert release is not None
    v, at = cand.version, ctx.clock()
    why = gate_reason if not forced else f"forced: {forced} (gate: {gate_reason})"
    served = Served(
        version=v, run_id=cand.info.run_id, storage_uri=cand.storage_uri, revision=revision, requested=requested
    )
    details = [f"gate: {gate_reason}"]
    undo: Callable[[], list[str]] | None = None
    if action == "release":
        percent = None
        new_status = Status(
            model=model, phase="stable", stable=served, decision=Record(action="release", reason=why, at=at)
        )
        try:
            undo = move_aliases(ctx.registry, model, {CHAMPION: v})
        except RegistryError as exc:
            return Outcome("error", f"cannot release v{v}: alias {CHAMPION} could not be set: {exc}")
        details.append(f"alias {CHAMPION} -> v{v}")
        message = f"{model} v{v} released at 100% (first release)"
        subject = f"{model}: release v{v} at 100%"
    else:
        percent = release.rollout.steps[0]
        canary = Canary(**served.model_dump(), percent=percent, forced=forced)
        new_status = status.model_copy(
            update={
                "phase": "canary",
                "canary": canary,
                "window_start": at,
                "decision": Record(action="canary", reason=why, at=at),
            }
        )
        stable_v = status.stable.version if status.stable else "?"
        message = f"{model} v{v} promoted to a {percent}% canary (v{stable_v} keeps {100 - percent}%)"
        subject = f"{model}: promote v{v} to a {percent}% canary"
        details.append("the rollout advances, holds or rolls back on the serving metrics at each step")
    write_state(tx, state.paths, set_traffic(full, percent), new_status)
    body = [
        f"Requested: {requested} -> v{v} (run {cand.info.run_id})",
        f"Storage: {cand.storage_uri}",
        f"Gate: {gate_reason}",
        f"Serving before: {status.describe()}",
        f"Rollout steps: {release.rollout.steps}",
    ]
    if forced:
        body.append(f"FORCED (Sluice-Force): {forced}")
    trailers = {
        "Model": model,
        "Version": v,
        "Step": "100" if percent is None else str(percent),
        "Action": "release" if action == "release" else "promote",
        "Reason": why,
        "Stable-Version": status.stable.version if status.stable else "",
        "Forced": "yes" if forced else "",
    }
    out = commit_state(
        tx,
        action=action,
        message=message,
        subject=subject,
        body=body,
        trailers=trailers,
        push=ctx.push,
        details=details,
    )
    if out.failed and undo is not None:
        out.details.extend(f"WARNING: {problem}" for problem in undo())
    return out
