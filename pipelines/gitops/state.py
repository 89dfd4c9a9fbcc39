"""A model's state as Git declares it: its release file, rendered manifest and status record.

The same reading serves CI in a checkout (`WorkingTree`), the pre-receive hook on pushed objects and
the local stand-in following the remote (`Revision`: files read with `git show`, bare repos too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.gitops import git
from pipelines.gitops.manifest import MANIFEST_FILENAME, parse_manifest_text
from pipelines.gitops.release import RELEASE_FILENAME, Release, ReleaseError, parse_release_text
from pipelines.gitops.status import STATUS_FILENAME, Status, parse_status

MODELS_DIR = "gitops/models"


class Source(Protocol):
    def read(self, path: str) -> str | None: ...
    def files(self, under: str) -> list[str]: ...


@dataclass(frozen=True)
class WorkingTree:
    root: Path

    def read(self, path: str) -> str | None:
        try:
            return (self.root / path).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def files(self, under: str) -> list[str]:
        base = self.root / under
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())


@dataclass(frozen=True)
class Revision:
    repo: Path
    rev: str

    def read(self, path: str) -> str | None:
        return git.show_file(self.repo, self.rev, path)

    def files(self, under: str) -> list[str]:
        return git.list_files(self.repo, self.rev, under) if git.has_commits(self.repo, self.rev) else []


@dataclass(frozen=True)
class ModelPaths:
    model: str

    @property
    def folder(self) -> str:
        return f"{MODELS_DIR}/{self.model}"

    @property
    def release(self) -> str:
        return f"{self.folder}/{RELEASE_FILENAME}"

    @property
    def manifest(self) -> str:
        return f"{self.folder}/{MANIFEST_FILENAME}"

    @property
    def status(self) -> str:
        return f"{self.folder}/{STATUS_FILENAME}"

    @property
    def ci_owned(self) -> tuple[str, str]:
        return (self.manifest, self.status)


@dataclass(frozen=True)
class ModelState:
    paths: ModelPaths
    release: Release | None  # None: no release file, or it does not parse (release_error says why)
    release_error: str | None
    release_text: str | None
    manifest: dict[str, Any] | None
    status: Status

    @property
    def model(self) -> str:
        return self.paths.model


def models(source: Source) -> list[str]:
    """Models with a release file."""
    names = set()
    for path in source.files(MODELS_DIR):
        parts = path.split("/")
        if len(parts) == 4 and parts[3] == RELEASE_FILENAME:
            names.add(parts[2])
    return sorted(names)


def read_model(source: Source, model: str) -> ModelState:
    """The model's state. A broken release file is reported in `release_error`; a broken manifest or
    status record (CI wrote them, so that is a fault) raises ValueError naming the file."""
    paths = ModelPaths(model)
    text = source.read(paths.release)
    release, error = None, None
    if text is None:
        error = f"{paths.release}: no such release file"
    else:
        try:
            release = parse_release_text(text, paths.release)
        except ReleaseError as exc:
            error = str(exc)
    manifest_text = source.read(paths.manifest)
    manifest = None if manifest_text is None else parse_manifest_text(manifest_text, paths.manifest)
    status = parse_status(source.read(paths.status), model, paths.status)
    return ModelState(paths, release, error, text, manifest, status)
