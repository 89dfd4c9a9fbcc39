"""Writing Git as one transaction: check the checkout, write files, commit with trailers, push.

Every CI step that changes what serves goes through `Transaction`: it refuses a checkout that is not
fit for a commit (not a repository, uncommitted changes, detached HEAD), and puts the branch and the
files it wrote back exactly where they were if committing or pushing fails, so a refused or failed
step leaves Git as it found it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import faults
from pipelines.gitops import git


@dataclass(frozen=True)
class Outcome:
    """What a step did. `refused` and `error` mean nothing changed; `action` names the decision."""

    action: str  # release | canary | advance | finalize | hold | rollback | restore | noop | wait | refused | error
    message: str
    commit: str | None = None
    push: git.PushResult | None = None
    details: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"refused": 2, "error": 1}.get(self.action, 0)

    @property
    def failed(self) -> bool:
        return self.exit_code != 0

    def render(self) -> str:
        lines = [("REFUSED: " if self.action == "refused" else "") + self.message, *self.details]
        if self.commit:
            lines.append(f"commit {self.commit[:12]}")
        if self.push:
            lines.append(
                f"pushed to {self.push.remote}/{self.push.branch}"
                + (" (rebased onto the moved remote)" if self.push.rebased else "")
            )
        return "\n".join(lines)


def refused(message: str, *details: str) -> Outcome:
    return Outcome("refused", message, details=list(details))


class NotClean(Exception):
    """The checkout cannot take a commit; `outcome` says why."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.message)
        self.outcome = outcome


@dataclass
class Transaction:
    """A clean checkout at `before`, and the files this step writes (paths relative to `root`)."""

    root: Path
    before: str
    written: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, repo: Path) -> Transaction:
        """Raise NotClean when `repo` is not a git checkout on a branch without uncommitted changes."""
        try:
            root = git.toplevel(repo)
            dirty = git.dirty_paths(root)
            if dirty:
                raise NotClean(
                    refused(
                        f"the working tree of {root} has uncommitted changes; commit or stash them first:",
                        *(f"  {d}" for d in dirty[:20]),
                    )
                )
            git.current_branch(root)
            return cls(root, git.head(root))
        except git.GitError as exc:
            raise NotClean(refused(str(exc))) from None

    def write(self, path: str, text: str) -> bool:
        """Write `text` to `path` unless it already holds exactly that; True if the file changed."""
        target = self.root / path
        if target.exists() and target.read_text(encoding="utf-8") == text:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        if path not in self.written:
            self.written.append(path)
        return True

    def commit(
        self, subject: str, body: str, trailers: Mapping[str, str], push: bool
    ) -> tuple[str, git.PushResult | None]:
        """Commit what was written (an empty commit if nothing) and push; on any failure put everything
        back at `before` and re-raise."""
        try:
            sha = git.commit(self.root, self.written, subject, body, trailers)
            faults.point("after-commit")
            pushed = git.push(self.root, self.before) if push else None
            return (pushed.sha if pushed else sha), pushed
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Put the branch, the index and the files this step wrote back to `before`."""
        git.git(self.root, "reset", "--quiet", "--hard", self.before, check=False)
        for path in self.written:
            if git.show_file(self.root, self.before, path) is None:
                (self.root / path).unlink(missing_ok=True)
