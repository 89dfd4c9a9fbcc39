"""Security basics, checked by real scanners (docs/security.md).

- No secret value in any commit of this repository's history: detect-secrets over every added line
  (pipelines/security/history.py). Proven on a throwaway repository where a fake AWS key is
  committed and deleted again, and where one arrives through a merge.
- checkov over terraform/storage, terraform/cluster, the manifests in gitops/ and argocd/, and the
  predictor pod KServe builds from the ClusterServingRuntime and a rendered InferenceService
  (pipelines/security/checkov.py): no finding without a justification written where it applies.
"""

from __future__ import annotations

import secrets
import string
import subprocess
from pathlib import Path

import pytest

from pipelines.config import REPO_ROOT
from pipelines.security import history

# --- secrets in the Git history --------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def _commit(repo: Path, message: str, files: dict[str, str | None]) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            _git(repo, "rm", "--quiet", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        _git(repo, "add", name)
    _git(repo, "commit", "--quiet", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _fake_aws_key_id() -> str:
    # Made up at run time, so no key-shaped string is ever committed (this file is scanned too).
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--initial-branch=main")
    for key, value in (("user.name", "tester"), ("user.email", "tester@example.com"), ("commit.gpgsign", "false")):
        _git(repo, "config", key, value)
    _commit(repo, "start", {"README.md": "a project\n"})
    return repo


def test_a_key_committed_then_deleted_is_still_found_in_history(scratch_repo: Path) -> None:
    key_id = _fake_aws_key_id()
    settings = f'S3 = {{\n    "endpoint": "http://127.0.0.1:4566",\n    "key_id": "{key_id}",\n}}\n'
    added = _commit(scratch_repo, "add settings", {"app/settings.py": settings})
    _commit(scratch_repo, "oops, remove the key", {"app/settings.py": None})
    assert key_id not in (scratch_repo / "README.md").read_text()
    assert not (scratch_repo / "app").exists()  # the working tree is clean: only history has it

    findings = history.scan_history(scratch_repo, processes=1)

    assert [(f.path, f.kind, f.commits) for f in findings] == [("app/settings.py", "AWS Access Key", (added,))]
    assert key_id not in findings[0].describe()  # reports never print the secret itself
    assert key_id[:4] in findings[0].line


def test_a_key_a_merge_introduces_is_found(scratch_repo: Path) -> None:
    _git(scratch_repo, "checkout", "--quiet", "-b", "topic")
    _commit(scratch_repo, "topic work", {"topic.txt": "topic\n"})
    _git(scratch_repo, "checkout", "--quiet", "main")
    _commit(scratch_repo, "main work", {"main.txt": "main\n"})
    _git(scratch_repo, "merge", "--quiet", "--no-ff", "--no-commit", "topic")
    key_id = _fake_aws_key_id()
    (scratch_repo / "main.txt").write_text(f"main\naws_key_id: {key_id}\n")  # added by the merge itself
    _git(scratch_repo, "add", "main.txt")
    _git(scratch_repo, "commit", "--quiet", "-m", "merge topic")
    merge = _git(scratch_repo, "rev-parse", "HEAD")

    findings = history.scan_history(scratch_repo, processes=1)

    assert [(f.path, f.kind, f.commits) for f in findings] == [("main.txt", "AWS Access Key", (merge,))]


def test_only_allowlisted_values_and_lock_files_are_ignored(scratch_repo: Path) -> None:
    key_id = _fake_aws_key_id()
    _commit(
        scratch_repo,
        "localstack settings and a lock file",
        {
            # LocalStack's dummy pair: allowlisted. The same keyword with any other value is not.
            "env.py": 'LOCAL = {"AWS_SECRET_ACCESS_KEY": "test"}\nREMOTE = {"AWS_SECRET_ACCESS_KEY": "hunter2-prod"}\n',
            "uv.lock": f'[[package]]\nname = "x"\nkey = "{key_id}"\n',
            "sub/uv.lock.txt": f"{key_id}\n",  # not a lock file: scanned
        },
    )

    findings = history.scan_history(scratch_repo, processes=1)

    assert sorted((f.path, f.kind) for f in findings) == [
        ("env.py", "Secret Keyword"),
        ("sub/uv.lock.txt", "AWS Access Key"),
    ]
    (remote,) = [f for f in findings if f.path == "env.py"]
    assert remote.line.startswith("REMOTE") and "hunter2" not in remote.line


def test_no_secret_in_this_repositorys_history() -> None:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: no history to scan")
    if _git(REPO_ROOT, "rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the history is incomplete (fetch it all: git fetch --unshallow)")
    findings = history.scan_history(REPO_ROOT)
    assert not findings, "secrets in the Git history (rotate them, then rewrite history):\n" + "\n".join(
        f.describe() for f in findings
    )
