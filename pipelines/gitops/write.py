"""Write a model's CI-owned files (and a release write-back) into a Transaction, and commit them.

Every CI commit carries `Sluice-*` trailers (Model, Version, Step, Action, Reason, ...) that
`sluice history` and the console read back; the status record and the manifest change together.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.gitops import git
from pipelines.gitops.commit import NotClean, Outcome, Transaction, refused
from pipelines.gitops.manifest import dump_manifest
from pipelines.gitops.state import ModelPaths, ModelState, WorkingTree, read_model
from pipelines.gitops.status import Status, dump_status


def open_model(repo: Path, model: str) -> tuple[Transaction, ModelState] | Outcome:
    """A transaction on a clean checkout and the model's state in it, or why a CI step cannot start."""
    try:
        tx = Transaction.open(repo)
    except NotClean as exc:
        return exc.outcome
    try:
        return tx, read_model(WorkingTree(tx.root), model)
    except ValueError as exc:  # CI's own files do not parse: a fault to look at, not a refusal
        return Outcome("error", f"{model}: {exc}")


def write_state(tx: Transaction, paths: ModelPaths, manifest: Mapping[str, Any] | None, status: Status) -> None:
    if manifest is not None:
        tx.write(paths.manifest, dump_manifest(manifest))
    tx.write(paths.status, dump_status(status))


def commit_state(
    tx: Transaction,
    *,
    action: str,
    message: str,
    subject: str,
    body: list[str],
    trailers: Mapping[str, str],
    push: bool,
    details: list[str] | None = None,
) -> Outcome:
    """Commit what `tx` holds; a push that cannot land (rejected, conflict) is a refusal, anything
    else an error, and either way Git is back where it was."""
    try:
        sha, pushed = tx.commit(subject, "\n".join(body), trailers, push)
    except git.PushRejected as exc:
        return refused(str(exc))
    except git.GitError as exc:
        return Outcome("error", f"commit failed, nothing changed: {exc}")
    return Outcome(action, message, sha, pushed, list(details or []))
