"""A person's clone of the GitOps repository, driven the way a person would: edit the release file,
commit, push, read what the remote said, pull CI's commits, and wait for CI to reach a state.

The demo, the end-to-end tests and the benchmarks use this, so they promote exactly as a user does:
by `git push`, nothing else.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.gitops import git
from pipelines.gitops.state import ModelPaths, ModelState, Revision, read_model
from pipelines.gitops.status import Status

_SELECTOR = re.compile(r"^#?\s*(version|alias)\s*:.*$", re.MULTILINE)


@dataclass(frozen=True)
class Push:
    ok: bool
    sha: str
    output: str  # what git printed, the remote's hook output included

    def remote_lines(self) -> list[str]:
        return [ln.removeprefix("remote:").strip() for ln in self.output.splitlines() if ln.startswith("remote:")]


class Workspace:
    def __init__(self, remote: str, path: Path, name: str = "alice", branch: str = "main"):
        self.remote, self.path, self.branch = remote, Path(path), branch
        if not (self.path / ".git").is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            git.git(self.path.parent, "clone", "--quiet", remote, str(self.path))
        for key, value in (("user.name", name), ("user.email", f"{name}@example.com"), ("commit.gpgsign", "false")):
            git.git(self.path, "config", key, value)
        self.pull()

    def pull(self) -> str:
        git.git(self.path, "fetch", "--quiet", "origin")
        git.git(self.path, "checkout", "--quiet", "-B", self.branch, f"origin/{self.branch}")
        git.git(self.path, "reset", "--quiet", "--hard", f"origin/{self.branch}")
        return git.head(self.path)

    def release_path(self, model: str) -> Path:
        return self.path / ModelPaths(model).release

    def set_release(self, model: str, version: str | None = None, alias: str | None = None) -> None:
        """Name `version` (or `alias`) in the release file, keeping everything else as it is."""
        path = self.release_path(model)
        text = path.read_text(encoding="utf-8")
        line = f"version: {version}" if version is not None else f"alias: {alias}"
        if _SELECTOR.search(text):
            text = _SELECTOR.sub(line, text, count=1)
        else:
            text = text.replace(f"model: {model}\n", f"model: {model}\n{line}\n", 1)
        path.write_text(text, encoding="utf-8")

    def add_model(self, model: str, change: Callable[[str], str] = lambda text: text, like: str = "rossmann") -> None:
        """A new model folder whose release file is `like`'s, renamed (and `change`d), staged for commit."""
        template = self.release_path(like).read_text(encoding="utf-8")
        path = self.release_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(change(template.replace(f"model: {like}", f"model: {model}")), encoding="utf-8")
        git.git(self.path, "add", str(path))

    def edit(self, relpath: str, change: Callable[[str], str]) -> None:
        path = self.path / relpath
        path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")

    def commit(self, message: str, force_reason: str | None = None) -> str:
        if force_reason:
            message += f"\n\nSluice-Force: {force_reason}"
        git.git(self.path, "commit", "--quiet", "--all", "--file", "-", input=message + "\n")
        return git.head(self.path)

    def push(self) -> Push:
        proc = subprocess.run(
            ["git", "push", "origin", f"HEAD:refs/heads/{self.branch}"],
            cwd=self.path,
            capture_output=True,
            text=True,
        )
        return Push(proc.returncode == 0, git.head(self.path), (proc.stdout + proc.stderr).strip())

    def undo_last_commit(self) -> None:
        git.git(self.path, "reset", "--quiet", "--hard", "HEAD~1")


def remote_state(remote: Path, model: str, branch: str = "main") -> ModelState:
    return read_model(Revision(remote, branch), model)


def wait_for_status(
    remote: Path,
    model: str,
    done: Callable[[Status], bool],
    timeout: float,
    branch: str = "main",
    on_change: Callable[[Status, git.LogEntry | None], None] | None = None,
) -> Status:
    """Poll the remote until the model's status record satisfies `done`; report every CI commit."""
    deadline = time.monotonic() + timeout
    last_head: str | None = None
    status = remote_state(remote, model, branch).status
    while True:
        head = git.resolve(remote, branch)
        if head != last_head:
            last_head = head
            status = remote_state(remote, model, branch).status
            if on_change is not None:
                entries = git.sluice_log(remote, model, max_count=1, rev=branch)
                on_change(status, entries[0] if entries else None)
            if done(status):
                return status
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{model}: CI did not get to the expected state within {timeout:.0f}s ({status.describe()})"
            )
        time.sleep(0.5)
