"""`sluice ci check`: the required check on a change to the GitOps repository.

Run by the pre-receive hook of the embedded Git remote on every pushed branch update (a failure
rejects the push and prints why to the pusher; nothing is written), and by the `check` workflow on
pull requests. It checks what a person changed between `--base` and `--rev`:

- people do not edit what CI writes (`inferenceservice.yaml`, `status.yaml`): only the CI bot may;
- every release file that changed parses strictly, and what it names can serve: the version or
  alias exists, is READY, has `s3://` artifacts and a signature (promotion/checks.py);
- it passes the evaluation gate against the version to beat, unless the newest commit that changed
  it carries `Sluice-Force: <reason>`;
- CI-owned files that changed still parse (a broken CI commit is stopped at the door too).
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.manifest import ResolvedVersion, render_inference_service, revision_digest
from pipelines.gitops.state import MODELS_DIR, ModelPaths, Revision, Source, WorkingTree, read_model
from pipelines.promotion.checks import GateRunner, Refusal, check_candidate, check_gate, gate_baseline
from pipelines.promotion.plan import plan
from pipelines.promotion.promote import FORCE_TRAILER
from pipelines.registry import Registry

CI_OWNED = (f"{MODELS_DIR}/*/inferenceservice.yaml", f"{MODELS_DIR}/*/status.yaml")


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"sluice ci check: {'passed' if self.ok else 'FAILED'}"]
        lines += [f"  - {n}" for n in self.notes]
        lines += [f"  x {p}" for p in self.problems]
        return "\n".join(lines)


def _model_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[2] if len(parts) >= 4 and "/".join(parts[:2]) == MODELS_DIR else None


def check(
    repo: Path,
    rev: str | None,
    base: str | None,
    registry: Registry,
    s3: object,
    gate: GateRunner,
    bots: Sequence[str],
) -> CheckResult:
    """Check the change `base..rev` (rev None: the working tree, every model)."""
    result = CheckResult()
    source: Source = WorkingTree(git.toplevel(repo)) if rev is None else Revision(repo, rev)
    changed_models: set[str] = set()
    forced: dict[str, str] = {}
    if rev is not None:
        for c in git.commits_between(repo, base, rev):
            if c.committer not in bots:
                owned = [f for f in c.files if any(fnmatch.fnmatch(f, pat) for pat in CI_OWNED)]
                if owned:
                    result.problems.append(
                        f"commit {c.sha[:10]} ({c.committer}) edits {', '.join(owned)}: CI writes these; "
                        "change release.yaml instead and let CI render them"
                    )
            for f in c.files:
                m = _model_of(f)
                if m is not None:
                    changed_models.add(m)
                    if f.endswith("/release.yaml") and m not in forced and c.committer not in bots:
                        forced[m] = (c.trailers.get(FORCE_TRAILER) or "").strip()
    models = sorted(changed_models) if rev is not None and base is not None else None
    from pipelines.gitops.state import models as all_models

    for model in models if models is not None else all_models(source):
        _check_model(source, model, registry, s3, gate, forced.get(model) or None, result)
    if not result.problems and not result.notes:
        result.notes.append("no release file changed")
    return result


def _check_model(
    source: Source,
    model: str,
    registry: Registry,
    s3: object,
    gate: GateRunner,
    forced: str | None,
    result: CheckResult,
) -> None:
    paths = ModelPaths(model)
    if source.read(paths.release) is None:
        result.notes.append(f"{model}: no release file (the folder is gone: ArgoCD prunes its InferenceService)")
        return
    try:
        state = read_model(source, model)
    except ValueError as exc:
        result.problems.append(f"{model}: {exc}")
        return
    release = state.release
    if release is None:
        result.problems.append(state.release_error or f"{model}: unreadable release file")
        return
    if not release.released:
        if state.status.phase != "empty":
            result.problems.append(f"{paths.release} names no version or alias while {state.status.describe()}")
        else:
            result.notes.append(f"{model}: names no version yet: nothing to release")
        return
    cand = check_candidate(registry, s3, model, release.ref, by_alias=release.alias is not None)
    if isinstance(cand, Refusal):
        result.problems.append(f"{paths.release}: {release.requested}: {cand.reason}")
        return
    full = render_inference_service(
        release, ResolvedVersion(model, cand.version, cand.info.run_id, cand.storage_uri), None
    )
    what = plan(state.status, cand.version, revision_digest(full))
    if what.action in ("release", "canary") and not (
        state.status.stable and state.status.stable.version == cand.version
    ):
        baseline = gate_baseline(registry, model, state.status, cand.version)
        passed, reason = check_gate(registry, model, cand.info, baseline, gate)
        if not passed and not forced:
            result.problems.append(
                f"{model} v{cand.version} fails the evaluation gate against v{baseline}: {reason}. To override it, "
                "amend the commit with a trailer line `Sluice-Force: <why>` (recorded in the status record)"
            )
            return
        if not passed:
            result.notes.append(f"{model} v{cand.version}: gate FAILED but forced ({forced}): {reason}")
        else:
            result.notes.append(f"{model} v{cand.version}: {reason}")
    result.notes.append(f"{model}: {release.requested} -> v{cand.version}: {what.reason}")


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.ci.common import connect_registry, gate_for, s3_for

    repo = Path(args.repo)
    base = args.base if args.base and set(args.base) != {"0"} else None
    result = check(
        repo, args.rev, base, connect_registry(settings), s3_for(settings), gate_for(settings), settings.ci_bot_names
    )
    print(result.render(), flush=True)
    return 0 if result.ok else 1
