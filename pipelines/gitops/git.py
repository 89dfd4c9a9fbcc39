"""Git for the GitOps steps, via the `git` executable (no library, nothing cached).

Everything here works on an explicit repository path (a working tree or a bare repository) and raises
GitError with the command and git's own message on failure. Callers decide what to do about it; the
only recovery done here is in `push`, which rebases onto a moved remote or puts the branch back
exactly where it was.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TRAILER_PREFIX = "Sluice-"
ZERO_SHA = "0" * 40  # what git says for "no commit" (a new or deleted branch)
# A committer identity for machines without one (fresh CI runners, test repos); a configured
# user.name/user.email always wins.
FALLBACK_NAME = "sluice"
FALLBACK_EMAIL = "sluice@localhost"


class GitError(RuntimeError):
    """A git command failed; the message says which one and why."""


class PushRejected(GitError):
    """The push failed and was not recovered; the local branch is back where it was before the command."""


def git(repo: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise GitError(f"git {' '.join(args)} failed ({proc.returncode}): {detail}")
    return proc


def toplevel(path: Path) -> Path:
    """The working tree root containing `path`; GitError if it is not in a repository."""
    try:
        out = git(path, "rev-parse", "--show-toplevel").stdout.strip()
    except (GitError, FileNotFoundError, NotADirectoryError) as exc:
        raise GitError(f"{path} is not inside a git repository") from exc
    return Path(out)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def current_branch(repo: Path) -> str:
    name = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
    if not name:
        raise GitError("HEAD is detached: check out the branch that gitops/ lives on")
    return name


def dirty_paths(repo: Path, untracked_under: Sequence[str] = ("gitops",)) -> list[str]:
    """Changes that make the tree unfit for a sluice commit.

    Every staged or modified tracked file counts; untracked files count only under `untracked_under`
    (a stray notes.txt at the root does not block a promotion, an unknown manifest in gitops/ does).
    """
    out = git(repo, "status", "--porcelain=v1", "--untracked-files=all").stdout
    dirty = []
    for line in out.splitlines():
        status, path = line[:2], line[3:]
        if status == "??":
            if any(path == p or path.startswith(p.rstrip("/") + "/") for p in untracked_under):
                dirty.append(line)
        else:
            dirty.append(line)
    return dirty


def _identity_env(repo: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if not git(repo, "config", "user.name", check=False).stdout.strip() and "GIT_AUTHOR_NAME" not in os.environ:
        env |= {"GIT_AUTHOR_NAME": FALLBACK_NAME, "GIT_COMMITTER_NAME": FALLBACK_NAME}
    if not git(repo, "config", "user.email", check=False).stdout.strip() and "GIT_AUTHOR_EMAIL" not in os.environ:
        env |= {"GIT_AUTHOR_EMAIL": FALLBACK_EMAIL, "GIT_COMMITTER_EMAIL": FALLBACK_EMAIL}
    return env


def one_line(value: str) -> str:
    """Trailer values must stay on one line."""
    return " ".join(str(value).split())


def format_message(subject: str, body: str, trailers: Mapping[str, str]) -> str:
    lines = [one_line(subject), ""]
    if body.strip():
        lines += [body.rstrip(), ""]
    lines += [f"{TRAILER_PREFIX}{key}: {one_line(value)}" for key, value in trailers.items() if value != ""]
    return "\n".join(lines) + "\n"


def commit(repo: Path, paths: Sequence[str], subject: str, body: str, trailers: Mapping[str, str]) -> str:
    """Commit `paths` (relative to the repo; empty = an empty commit) with trailers; return the new sha."""
    if paths:
        git(repo, "add", "--", *paths)
    message = format_message(subject, body, trailers)
    env = {**os.environ, **_identity_env(repo), "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    args = ["git", "commit", "--quiet", "--no-verify", "--file", "-"]
    if not paths:
        args.append("--allow-empty")
    proc = subprocess.run(args, cwd=repo, input=message, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GitError(f"git commit failed: {(proc.stderr or proc.stdout).strip()}")
    return head(repo)


def reset_hard(repo: Path, sha: str) -> None:
    git(repo, "reset", "--quiet", "--hard", sha)


@dataclass(frozen=True)
class PushResult:
    remote: str
    branch: str
    sha: str  # what the remote branch points at now
    rebased: bool  # the remote had moved; our commit was replayed on top of it


def _upstream(repo: Path) -> tuple[str, str]:
    branch = current_branch(repo)
    remote = git(repo, "config", f"branch.{branch}.remote", check=False).stdout.strip()
    merge = git(repo, "config", f"branch.{branch}.merge", check=False).stdout.strip()
    if not remote:
        remotes = git(repo, "remote").stdout.split()
        if not remotes:
            raise GitError("the repository has no remote to push to")
        remote = "origin" if "origin" in remotes else remotes[0]
    return remote, merge.removeprefix("refs/heads/") or branch


def push(repo: Path, before: str, attempts: int = 3) -> PushResult:
    """Push HEAD to the branch's upstream. If the remote moved, fetch and rebase onto it, then retry.

    `before` is where the branch was before this command made its commit(s). If the rebase conflicts
    (or pushing keeps failing) the rebase is aborted, the branch is reset to `before` and PushRejected
    explains why: the remote keeps everything it had, and the local branch is as it was.
    """
    remote, branch = _upstream(repo)
    rebased = False
    last_error = ""
    for _ in range(attempts):
        proc = git(repo, "push", "--porcelain", remote, f"HEAD:refs/heads/{branch}", check=False)
        if proc.returncode == 0:
            return PushResult(remote, branch, head(repo), rebased)
        last_error = (proc.stderr or proc.stdout).strip()
        try:
            git(repo, "fetch", "--quiet", remote, branch)
        except GitError as exc:
            reset_hard(repo, before)
            raise PushRejected(
                f"push to {remote}/{branch} failed ({last_error or 'no answer'}), and so did fetching it ({exc}). "
                f"Nothing was pushed; the local branch is back at {before[:12]}. Check the remote, then run again."
            ) from exc
        upstream = git(repo, "rev-parse", "FETCH_HEAD").stdout.strip()
        if git(repo, "merge-base", "--is-ancestor", upstream, "HEAD", check=False).returncode == 0:
            # The remote did not move (or we already contain it): the push failed for another reason.
            break
        rb = git(repo, "rebase", "--quiet", upstream, check=False)
        if rb.returncode != 0:
            conflicts = git(repo, "diff", "--name-only", "--diff-filter=U", check=False).stdout.split()
            git(repo, "rebase", "--abort", check=False)
            reset_hard(repo, before)
            raise PushRejected(
                f"{remote}/{branch} moved to {upstream[:12]} and our commit does not rebase onto it "
                f"(conflict in {', '.join(conflicts) or 'the working tree'}). Nothing was pushed; the local "
                f"branch is back at {before[:12]}. Pull, look at what changed, and run the command again."
            )
        rebased = True
    reset_hard(repo, before)
    raise PushRejected(
        f"push to {remote}/{branch} failed: {last_error or 'unknown reason'}. Nothing was pushed; the local "
        f"branch is back at {before[:12]}."
    )


@dataclass(frozen=True)
class LogEntry:
    sha: str
    date: str  # committer date, ISO 8601
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)  # without the Sluice- prefix

    def get(self, key: str, default: str = "") -> str:
        return self.trailers.get(key, default)


_FS, _RS = "\x1f", "\x1e"


def _parse_trailers(text: str) -> dict[str, str]:
    trailers = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.startswith(TRAILER_PREFIX):
            trailers[key.removeprefix(TRAILER_PREFIX)] = value.strip()
    return trailers


def sluice_log(repo: Path, model: str | None = None, max_count: int | None = None, rev: str = "HEAD") -> list[LogEntry]:
    """Commits reachable from `rev` carrying Sluice- trailers (newest first), optionally of one model.

    The model is matched as a whole trailer line (`rossmann` never matches `rossmann-eu`) by git itself,
    before `--max-count` applies, so a limited lookup never comes back short.
    """
    if not has_commits(repo, rev):
        return []
    # Model names are DNS labels ([a-z0-9-]), safe in a basic regular expression.
    pattern = f"^{TRAILER_PREFIX}Model: {model}$" if model else f"^{TRAILER_PREFIX}Action: "
    args = ["log", f"--format=%H{_FS}%cI{_FS}%s{_FS}%(trailers:only,unfold){_RS}", f"--grep={pattern}", rev]
    if max_count:
        args.insert(1, f"--max-count={max_count}")
    out = git(repo, *args).stdout
    entries = []
    for record in out.split(_RS):
        record = record.strip("\n")
        if not record:
            continue
        sha, date, subject, trailer_text = record.split(_FS, 3)
        trailers = _parse_trailers(trailer_text)
        if model is not None and trailers.get("Model") != model:
            continue
        entries.append(LogEntry(sha, date, subject, trailers))
    return entries


def has_commits(repo: Path, rev: str = "HEAD") -> bool:
    return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False).returncode == 0


def resolve(repo: Path, rev: str) -> str | None:
    """The commit `rev` names, or None (an empty repository, an unknown branch)."""
    proc = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() or None


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    committer: str
    author: str
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()


def commits_between(repo: Path, base: str | None, rev: str) -> list[CommitInfo]:
    """Commits in `base..rev` (all of `rev` when base is None), newest first, with the files each changed."""
    span = rev if base is None else f"{base}..{rev}"
    out = git(
        repo,
        "log",
        "--no-renames",
        "--name-only",
        f"--format={_RS}%H{_FS}%cn{_FS}%an{_FS}%s{_FS}%(trailers:only,unfold){_FS}",
        span,
    ).stdout
    result = []
    for record in out.split(_RS):
        if not record.strip():
            continue
        sha, committer, author, subject, trailer_text, files = record.split(_FS, 5)
        names = tuple(f for f in files.splitlines() if f.strip())
        result.append(CommitInfo(sha, committer, author, subject, _parse_trailers(trailer_text), names))
    return result


def changed_files(repo: Path, base: str | None, rev: str) -> list[str]:
    """Paths that differ between `base` and `rev` (every path of `rev` when base is None)."""
    if base is None:
        return git(repo, "ls-tree", "-r", "--name-only", rev).stdout.split()
    return git(repo, "diff", "--no-renames", "--name-only", base, rev).stdout.split()


def list_files(repo: Path, rev: str, under: str) -> list[str]:
    """Paths of files under the folder `under` at `rev`."""
    return git(repo, "ls-tree", "-r", "--name-only", rev, "--", under.rstrip("/") + "/").stdout.split()


def last_commit_touching(repo: Path, rev: str, path: str) -> CommitInfo | None:
    """The newest commit reachable from `rev` that changed `path`."""
    if not has_commits(repo, rev):
        return None
    fmt = f"--format=%H{_FS}%cn{_FS}%an{_FS}%s{_FS}%(trailers:only,unfold)"
    out = git(repo, "log", "-1", fmt, rev, "--", path).stdout
    if not out.strip():
        return None
    sha, committer, author, subject, trailer_text = out.rstrip("\n").split(_FS, 4)
    return CommitInfo(sha, committer, author, subject, _parse_trailers(trailer_text), (path,))


def show_file(repo: Path, sha: str, path: str) -> str | None:
    """The content of `path` at commit `sha`, or None if it did not exist there."""
    proc = git(repo, "show", f"{sha}:{path}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def file_history(repo: Path, path: str, rev: str = "HEAD") -> list[str]:
    """Commits reachable from `rev` that changed `path`, newest first."""
    if not has_commits(repo, rev):
        return []
    return git(repo, "log", "--format=%H", rev, "--", path).stdout.split()
