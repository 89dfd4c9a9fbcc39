"""Real git repositories for the promotion and rollout tests: a bare remote and a clone of it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

RELEASE = {
    "rollout": {"steps": [10, 50, 100]},
    "gates": {
        "max_error_rate": 0.01,
        "max_p95_latency_ms": 250,
        "max_mean_relative_divergence": 0.15,
        "min_requests": 200,
    },
}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def _identity(repo: Path, name: str) -> None:
    git(repo, "config", "user.name", name)
    git(repo, "config", "user.email", f"{name}@example.com")
    git(repo, "config", "commit.gpgsign", "false")


@dataclass
class Repos:
    remote: Path  # bare
    work: Path  # the clone sluice commits in
    model: str

    @property
    def folder(self) -> Path:
        return self.work / "gitops" / "models" / self.model

    @property
    def manifest(self) -> Path:
        return self.folder / "inferenceservice.yaml"

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def remote_head(self, branch: str = "main") -> str:
        return git(self.remote, "rev-parse", branch)

    def status(self) -> str:
        return git(self.work, "status", "--porcelain", "--untracked-files=all")

    def other_clone(self, path: Path) -> Path:
        """A second clone, as another person or CI job would have."""
        git(path.parent, "clone", "--quiet", str(self.remote), path.name)
        _identity(path, "someone-else")
        return path


def make_repos(tmp: Path, model: str, release_extra: dict | None = None) -> Repos:
    remote, work = tmp / "remote.git", tmp / "work"
    tmp.mkdir(parents=True, exist_ok=True)
    git(tmp, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(tmp, "clone", "--quiet", str(remote), str(work))
    _identity(work, "tester")
    git(work, "checkout", "--quiet", "-b", "main")
    folder = work / "gitops" / "models" / model
    folder.mkdir(parents=True)
    release = {"model": model, "version": 1, **RELEASE, **(release_extra or {})}
    (folder / "release.yaml").write_text(yaml.safe_dump(release, sort_keys=False))
    (work / "README.md").write_text("test repo\n")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "initial")
    git(work, "push", "--quiet", "-u", "origin", "main")
    return Repos(remote, work, model)
