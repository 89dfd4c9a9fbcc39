"""The Releases panel's data: what Git says serves per model, its history, and what a person would push.

Everything comes from the GitOps remote's branch (the CI-owned status record, the release file and the
`Sluice-*` trailers of the commits), read with the same functions CI and `sluice history` use. When the
remote is not a local repository (a GitHub URL), it is fetched into a bare mirror under the state
folder first. MLflow is asked only which versions exist, to suggest the next one to release; when it
is down the panel still shows everything Git says.
"""

from __future__ import annotations

import difflib
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import Settings
from pipelines.console.redact import redact_url
from pipelines.gitops import git
from pipelines.gitops.release import Gates, ReleaseError, set_version
from pipelines.gitops.state import ModelState, Revision, models, read_model
from pipelines.gitops.status import Status
from pipelines.registry import RegistryError, connect

HISTORY_LIMIT = 50


@dataclass(frozen=True)
class HistoryRow:
    sha: str
    date: str
    action: str
    version: str
    step: str
    reason: str
    stable_version: str


@dataclass(frozen=True)
class Suggestion:
    """A change a person could push; the console never makes it."""

    title: str
    diff: str
    commands: list[str]


@dataclass(frozen=True)
class ModelRelease:
    model: str
    status: Status | None  # None: the record does not parse (error says why)
    requested: str  # what the release file asks for: 'version 3', 'alias champion', 'nothing'
    release_error: str | None
    gates: Gates | None
    history: list[HistoryRow]
    suggestions: list[Suggestion] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Releases:
    source: str  # where Git was read, credentials removed
    head: str | None
    models: list[ModelRelease]
    registry_error: str | None = None
    error: str | None = None  # the whole panel's source is unavailable


def mlflow_version_url(tracking_uri: str, model: str, version: str) -> str:
    """The MLflow UI's page of one registered version."""
    base = redact_url(tracking_uri).rstrip("/")
    if not base.startswith(("http://", "https://")):
        return ""
    return f"{base}/#/models/{urllib.parse.quote(model)}/versions/{urllib.parse.quote(version)}"


_GITHUB = re.compile(
    r"^(?:https://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com/)([\w.-]+/[\w.-]+?)(?:\.git)?/?$"
)


def commit_url(remote: str, sha: str) -> str:
    """The commit's web page when the remote is on GitHub; '' for any other remote (a bare repository
    on this machine has no web page: the page shows the sha to `git show`)."""
    found = _GITHUB.match(remote.strip())
    return f"https://github.com/{found.group(1)}/commit/{sha}" if found else ""


def gitops_repo(settings: Settings) -> Path:
    """A repository holding the remote's branch: the remote itself when it is local, else a mirror."""
    local = settings.gitops_remote_path
    if local is not None:
        return local
    mirror = settings.state_dir / "console" / "gitops-mirror.git"
    if not (mirror / "HEAD").is_file():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        git.git(mirror.parent, "init", "--quiet", "--bare", str(mirror))
    branch = settings.gitops_branch
    git.git(mirror, "fetch", "--quiet", "--prune", settings.gitops_url, f"+refs/heads/{branch}:refs/heads/{branch}")
    return mirror


def history_rows(repo: Path, model: str, rev: str, limit: int = HISTORY_LIMIT) -> list[HistoryRow]:
    return [
        HistoryRow(
            sha=e.sha,
            date=e.date,
            action=e.get("Action"),
            version=e.get("Version"),
            step=e.get("Step"),
            reason=e.get("Reason"),
            stable_version=e.get("Stable-Version"),
        )
        for e in git.sluice_log(repo, model, max_count=limit, rev=rev)
    ]


def _diff(state: ModelState, version: str, comment: str) -> str:
    assert state.release_text is not None
    after = set_version(state.release_text, version, comment, state.paths.release)
    lines = difflib.unified_diff(
        state.release_text.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"a/{state.paths.release}",
        tofile=f"b/{state.paths.release}",
    )
    return "".join(lines)


def suggestions(state: ModelState, clone: str, newest: str | None) -> list[Suggestion]:
    """What a person could push from here: roll a canary back, or release a newer registered version."""
    if state.release is None or state.release_text is None:
        return []
    status = state.status
    stable, canary = status.stable, status.canary
    out: list[Suggestion] = []

    def make(title: str, version: str, why: str) -> Suggestion | None:
        try:
            diff = _diff(state, version, why)
        except ReleaseError:
            return None
        message = f"{state.model}: {why}"
        return Suggestion(
            title,
            diff,
            [
                clone,
                "cd gitops-work",
                f"# edit {state.paths.release} as in the diff above",
                f"git commit -am '{message}'",
                "git push",
            ],
        )

    if status.phase == "canary" and stable is not None and canary is not None:
        s = make(f"Roll v{canary.version} back (naming the stable version aborts the rollout)", stable.version,
                 f"roll back to v{stable.version}")  # fmt: skip
        if s:
            out.append(s)
    served = {v.version for v in (stable, canary) if v is not None}
    if newest is not None and newest not in served and status.phase in ("empty", "stable"):
        s = make(f"Release v{newest}, the newest registered version", newest, f"release v{newest}")
        if s:
            out.append(s)
    return out


def _newest_versions(settings: Settings, names: list[str]) -> tuple[dict[str, str], str | None]:
    if urllib.parse.urlsplit(settings.tracking_uri).scheme not in ("http", "https"):
        # A local store would need `import mlflow` (seconds) on a page that should load in under one.
        return {}, "the tracking URI is not an MLflow server; no version suggestions"
    try:
        registry = connect(settings.tracking_uri)
        newest = {}
        for name in names:
            versions = [int(v) for v in registry.versions(name) if v.isdigit()]
            if versions:
                newest[name] = str(max(versions))
        return newest, None
    except (RegistryError, OSError) as exc:
        return {}, redact_url(f"MLflow at {settings.tracking_uri} did not answer ({exc}); no version suggestions")


def _open(settings: Settings) -> tuple[Path, str] | str:
    """The repository and the branch's head commit, or why they cannot be read."""
    local = settings.gitops_remote_path
    if local is not None and not (local / "HEAD").is_file():
        return f"no GitOps repository at {local} (run `sluice up`)"
    try:
        repo = gitops_repo(settings)
        head = git.resolve(repo, settings.gitops_branch)
    except (git.GitError, OSError) as exc:
        return f"cannot read the GitOps repository: {redact_url(str(exc))}"
    if head is None:
        return f"the GitOps repository has no branch {settings.gitops_branch!r} yet"
    return repo, head


@dataclass(frozen=True)
class Gated:
    """What the Live panel needs from Git: the models, and one model's gates."""

    models: list[str]
    gates: Gates | None
    error: str | None = None


def gather_gates(settings: Settings, model: str) -> Gated:
    opened = _open(settings)
    if isinstance(opened, str):
        return Gated([], None, opened)
    revision = Revision(*opened)
    names = models(revision)
    if model not in names:
        return Gated(names, None)
    try:
        release = read_model(revision, model).release
    except ValueError as exc:  # CI's status record does not parse: say so, no thresholds
        return Gated(names, None, str(exc))
    return Gated(names, release.gates if release else None)


def gather_releases(settings: Settings, with_registry: bool = True) -> Releases:
    source = f"{redact_url(settings.gitops_url)} ({settings.gitops_branch})"
    opened = _open(settings)
    if isinstance(opened, str):
        return Releases(source, None, [], error=opened)
    repo, head = opened
    revision = Revision(repo, head)
    names = models(revision)
    newest, registry_error = _newest_versions(settings, names) if with_registry else ({}, None)
    clone = f"git clone {redact_url(settings.gitops_url)} gitops-work"
    rows = []
    for name in names:
        history = history_rows(repo, name, head)
        try:
            state = read_model(revision, name)
        except ValueError as exc:
            rows.append(ModelRelease(name, None, "", None, None, history, error=str(exc)))
            continue
        release = state.release
        rows.append(
            ModelRelease(
                model=name,
                status=state.status,
                requested=release.requested if release else "UNREADABLE",
                release_error=state.release_error,
                gates=release.gates if release else None,
                history=history,
                suggestions=suggestions(state, clone, newest.get(name)),
            )
        )
    return Releases(source, head, rows, registry_error=registry_error)
