"""Security basics, checked by real scanners (docs/security.md).

- No secret value in any commit of this repository's history: detect-secrets over every added line
  (pipelines/security/history.py). Proven on a throwaway repository where a fake AWS key is
  committed and deleted again, and where one arrives through a merge.
- checkov over terraform/storage, terraform/cluster, the manifests in gitops/ and argocd/, and the
  predictor pod KServe builds from the ClusterServingRuntime and a rendered InferenceService
  (pipelines/security/checkov.py): no finding without a justification written where it applies.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.config import REPO_ROOT, load_settings
from pipelines.platform.processes import PlatformError
from pipelines.security import checkov, history

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


def test_commits_scanned_once_are_taken_from_the_cache(scratch_repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _commit(scratch_repo, "a key", {"a.py": f'KEY_ID = "{_fake_aws_key_id()}"\n'})
    assert [f.commits for f in history.scan_history(scratch_repo, processes=1, cache_dir=cache)] == [(first,)]
    (cached,) = cache.glob("history-*.json")
    assert first in json.loads(cached.read_text())

    second = _commit(scratch_repo, "another key", {"b.py": f'KEY_ID = "{_fake_aws_key_id()}"\n'})
    both = history.scan_history(scratch_repo, processes=1, cache_dir=cache)
    assert both == history.scan_history(scratch_repo, processes=1)  # same answer as a full scan
    assert [(f.path, f.commits) for f in both] == [("a.py", (first,)), ("b.py", (second,))]

    # The first commit is not scanned again: what the cache says about it is what is reported.
    known = json.loads(cached.read_text())
    cached.write_text(json.dumps({**known, first: []}))
    assert [f.path for f in history.scan_history(scratch_repo, processes=1, cache_dir=cache)] == ["b.py"]


def test_no_secret_in_this_repositorys_history() -> None:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: no history to scan")
    if _git(REPO_ROOT, "rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("shallow clone: the history is incomplete (fetch it all: git fetch --unshallow)")
    # The shared state dir's cache: commits scanned by an earlier run are not scanned again.
    findings = history.scan_history(REPO_ROOT, cache_dir=load_settings(os.environ).state_dir / "security")
    assert not findings, "secrets in the Git history (rotate them, then rewrite history):\n" + "\n".join(
        f.describe() for f in findings
    )


# --- checkov ---------------------------------------------------------------------------------------

# What the runtime's container must pass: non-root, read-only root filesystem, no privilege
# escalation, no capabilities, not privileged, seccomp RuntimeDefault, no service-account token.
POD_MUST_PASS = ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37",
                 "CKV_K8S_38", "CKV_K8S_40")  # fmt: skip
POD = "Pod.sluice-serving.rossmann-predictor"


@pytest.fixture(scope="module")
def checkov_scan() -> checkov.Scan:
    """One checkov run over everything; checkov's virtualenv is the shared one `make setup` builds."""
    try:
        executable = checkov.ensure_checkov_venv(load_settings(os.environ))
    except PlatformError as e:
        pytest.skip(f"checkov's virtualenv cannot be built here (run `make setup` where PyPI answers): {e}")
    return checkov.run_checkov(executable)


@pytest.mark.slow
def test_checkov_finds_nothing_unjustified(checkov_scan: checkov.Scan) -> None:
    assert not checkov_scan.parsing_errors
    bad = checkov_scan.unjustified()
    assert not bad, "fix these or justify them where they apply (docs/security.md):\n" + "\n".join(
        r.describe() for r in bad
    )


@pytest.mark.slow
def test_checkov_really_checked_the_stacks_and_the_runtime_pod(checkov_scan: checkov.Scan) -> None:
    checked = {(r.check_id, r.resource) for r in checkov_scan.of("passed")}
    for check in POD_MUST_PASS:
        assert (check, POD) in checked, f"{check} did not pass on the rendered predictor pod"
    # The storage stack: public access blocked, encryption, versioning of both buckets, lifecycle.
    for check, resource in [
        ("CKV_AWS_21", "aws_s3_bucket.models"),
        ("CKV_AWS_21", "aws_s3_bucket.data"),
        ("CKV2_AWS_6", "aws_s3_bucket.models"),
        ("CKV2_AWS_61", "aws_s3_bucket.data"),
        ("CKV_AWS_300", "aws_s3_bucket_lifecycle_configuration.models"),
    ]:
        assert (check, resource) in checked, f"{check} did not pass on {resource}"
    assert any(r.file.startswith("gitops/") for r in checkov_scan.of("passed")), "nothing in gitops/ was checked"


def _result(outcome: str, reason: str = "") -> checkov.Result:
    return checkov.Result("CKV_X_1", "a check", "Pod.ns.p", "gitops/x.yaml", outcome, reason)


def test_a_skip_needs_a_real_reason() -> None:
    scan = checkov.Scan(
        [
            _result("passed"),
            _result("failed"),
            _result("skipped", "No comment provided"),  # checkov's text for a bare `checkov.io/skip1: CKV_X_1`
            _result("skipped", "fine"),
            _result("skipped", "Nothing consumes bucket events, so a notification would have no target"),
        ]
    )
    assert [(r.outcome, r.reason) for r in scan.unjustified()] == [
        ("failed", ""),
        ("skipped", "No comment provided"),
        ("skipped", "fine"),
    ]


def test_checkov_output_of_several_directories_counts_each_result_once(tmp_path: Path) -> None:
    result = {
        "check_id": "CKV_AWS_21",
        "check_name": "versioning",
        "resource": "aws_s3_bucket.data",
        "file_path": "/main.tf",
        "file_abs_path": str(REPO_ROOT / "terraform/storage/main.tf"),
        "check_result": {"result": "FAILED"},
    }
    report = {"check_type": "terraform", "results": {"failed_checks": [result]}, "summary": {"checkov_version": "3"}}
    text = json.dumps(report) + "\n" + json.dumps([report, {"passed": 0, "failed": 0}]) + "\n"
    scan = checkov.parse_report(text, REPO_ROOT, tmp_path)
    assert [(r.check_id, r.file, r.outcome) for r in scan.results] == [
        ("CKV_AWS_21", "terraform/storage/main.tf", "failed")
    ]


def test_predictor_pod_is_the_runtime_container_patched_by_the_predictor() -> None:
    pod = checkov.sample_predictor_pod()
    runtime = yaml.safe_load((REPO_ROOT / checkov.RUNTIME_FILE).read_text())
    (container,) = pod["spec"]["containers"]
    (declared,) = runtime["spec"]["containers"]
    assert container["image"] == declared["image"] and container["securityContext"] == declared["securityContext"]
    assert container["args"] == declared["args"]
    assert {"name": "SLUICE_MODEL_VERSION", "value": "1"} in container["env"]  # from the rendered predictor
    assert pod["spec"]["serviceAccountName"] == "sluice-models"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["volumes"] == runtime["spec"]["volumes"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"  # spec.annotations: KServe copies them
    assert annotations["sluice.dev/version"] == "1"  # the InferenceService's
    skips = {k for k in annotations if k.startswith("checkov.io/skip")}
    assert skips and skips == {k for k in runtime["metadata"]["annotations"] if k.startswith("checkov.io/skip")}


def test_merge_follows_kserve_for_env_args_and_maps() -> None:
    runtime = {
        "args": ["--a"],
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "1"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "ports": [{"containerPort": 1, "name": "http1"}],
        "command": ["python", "-m", "serving"],
    }
    patch = {
        "args": ["--b"],
        "env": [{"name": "Y", "value": "2"}],
        "resources": {"requests": {"cpu": "2"}},
        "ports": [{"containerPort": 1, "protocol": "TCP"}, {"containerPort": 2}],
        "command": ["other"],
    }
    assert checkov._merge(runtime, patch) == {
        "args": ["--a", "--b"],
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}},
        "ports": [{"containerPort": 1, "name": "http1", "protocol": "TCP"}, {"containerPort": 2}],
        "command": ["other"],
    }


def test_the_runtime_runs_as_non_root_on_a_read_only_root() -> None:
    """What the runtime image does (tests/test_image.py runs it so), the manifest says."""
    runtime = yaml.safe_load((REPO_ROOT / checkov.RUNTIME_FILE).read_text())["spec"]
    (container,) = runtime["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == ctx["runAsGroup"] == 10001
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    # The one writable path is a pod-local emptyDir at /tmp (the image's HOME).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in runtime["volumes"]}
    assert set(mounts) == {"/tmp"} and "emptyDir" in volumes[mounts["/tmp"]]
