"""The parts of .ci/kind-e2e.sh that run without a cluster, run for real.

The script itself needs Docker and a Kind cluster (it is statically checked in test_ci_static.py).
Here: its Python helpers on real files (the GitOps state it polls, the split and version checks on
answer tallies), terraform evaluating the ArgoCD bootstrap list the script passes, and (integration)
the broken version it registers, against a real MLflow + LocalStack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import Settings

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / ".ci" / "kind-e2e.sh"
CLUSTER = ROOT / "terraform" / "cluster"


def _heredoc(function: str) -> str:
    text = E2E.read_text()
    body = re.search(rf"^{function}\(\) \{{\n(.*?)^\}}\n", text, flags=re.S | re.M)
    assert body, f"no function {function} in {E2E.name}"
    code = re.search(r"<<'PY'\n(.*?)^PY\n", body.group(1), flags=re.S | re.M)
    assert code, f"{function} has no python heredoc"
    return code.group(1)


def _run(
    function: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"{function}.py"
    script.write_text(_heredoc(function))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


# ---- the GitOps state the script polls ---------------------------------------------------------
def _gitops(tmp_path: Path, status: dict[str, Any] | None, release: str = "model: rossmann\nversion: 2\n") -> Path:
    folder = tmp_path / "checkout" / "gitops" / "models" / "rossmann"
    folder.mkdir(parents=True)
    (folder / "release.yaml").write_text(release)
    if status is not None:
        (folder / "status.yaml").write_text(yaml.safe_dump(status))
    return tmp_path / "checkout"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "phase=empty stable= canary= percent= action= release=2"),
        (
            {
                "phase": "canary",
                "stable": {"version": "1", "since": "2026-11-30T10:00:00Z"},
                "canary": {"version": "2", "percent": 10},
                "decision": {"action": "advance", "reason": "gates passed", "at": "2026-11-30T10:05:00Z"},
            },
            "phase=canary stable=1 canary=2 percent=10 action=advance release=2",
        ),
        (
            {"phase": "stable", "stable": {"version": "2"}, "decision": {"action": "rollback", "reason": "x y"}},
            "phase=stable stable=2 canary= percent= action=rollback release=2",
        ),
    ],
)
def test_gitops_state_reads_status_and_release(tmp_path: Path, status: dict[str, Any] | None, expected: str) -> None:
    checkout = _gitops(tmp_path, status)
    proc = _run("gitops_state", str(checkout), "rossmann", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


# ---- checks on answers counted by version ---------------------------------------------------------
@pytest.mark.parametrize(
    ("tally", "version", "percent", "ok"),
    [
        ({"1": 180, "2": 20}, "2", 10, True),
        ({"1": 185, "2": 12, "errors": 3}, "2", 10, True),
        ({"1": 200}, "2", 10, False),  # the canary never answered
        ({"1": 100, "2": 100}, "2", 10, False),  # 50% is no 10% split
        ({"errors": 200}, "2", 10, False),
        ({"1": 95, "2": 105}, "2", 50, True),
    ],
)
def test_share_ok(tmp_path: Path, tally: dict[str, int], version: str, percent: int, ok: bool) -> None:
    proc = _run("share_ok", json.dumps(tally), version, str(percent), tmp_path=tmp_path)
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("tally", "ok"),
    [({"2": 40}, True), ({"2": 39, "1": 1}, False), ({"2": 39, "errors": 1}, False), ({}, False)],
)
def test_only_version(tmp_path: Path, tally: dict[str, int], ok: bool) -> None:
    proc = _run("only_version", json.dumps(tally), "2", tmp_path=tmp_path)
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr


# ---- the bootstrap list the script gives terraform --------------------------------------------------
def test_the_script_builds_every_project_image_the_platform_runs(tmp_path: Path) -> None:
    """Images only this project builds (no registry has them yet) are built and loaded into Kind:
    an unpullable one would keep the platform Application from turning Healthy."""
    proc = _run("project_images", str(ROOT / "gitops" / "platform"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split() for line in proc.stdout.splitlines())
    named = {
        c["image"]
        for path in (ROOT / "gitops" / "platform").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] in ("Deployment", "CronJob")
        for c in (doc["spec"].get("template") or doc["spec"]["jobTemplate"]["spec"]["template"])["spec"]["containers"]
        if "/sluice-dev/" in c["image"]
    }
    assert set(listed) == named and len(named) == 2, (listed, named)
    for dockerfile in listed.values():
        assert (ROOT / dockerfile).is_file()


def test_terraform_points_the_applications_the_script_applies_at_the_git_daemon(tmp_path: Path) -> None:
    """argocd_apps lists the child Applications; terraform's own expressions rewrite their repoURL."""
    exe = shutil.which("terraform")
    if not exe:
        pytest.skip("terraform is not installed")
    proc = _run("argocd_apps", str(ROOT / "argocd" / "apps"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert any(path.endswith("gitops/models") for _, path, _ in rows), rows
    # The same JSON list the script builds, relative to terraform/cluster.
    files = ["../../argocd/bootstrap/project.yaml", *(f"../../argocd/apps/{file}" for _, _, file in rows)]

    module = CLUSTER  # a copy with variables and locals only: no providers, so `terraform console` runs
    copy = tmp_path / "repo" / "terraform" / "cluster"
    copy.mkdir(parents=True)
    shutil.copy(module / "variables.tf", copy / "variables.tf")
    main = (module / "main.tf").read_text()
    block = re.search(r"^locals \{\n.*?^\}\n", main, flags=re.S | re.M)
    assert block
    (copy / "locals.tf").write_text(block.group(0))
    shutil.copytree(ROOT / "argocd", tmp_path / "repo" / "argocd")
    url = "git://172.18.0.1:9418/gitops.git"
    args = [exe, "console", "-no-color", f"-var=argocd_bootstrap_manifests={json.dumps(files)}"]
    args += [f"-var=git_repo_url={url}", "-var=git_revision=main"]
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1"}
    out = subprocess.run(
        args,
        input="jsonencode(local.bootstrap_manifests)\n",
        capture_output=True,
        text=True,
        cwd=copy,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    docs = [yaml.safe_load(d) for d in json.loads(json.loads(out.stdout.strip()))]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "AppProject" and kinds.count("Application") == len(rows)
    assert url in docs[0]["spec"]["sourceRepos"]
    for app in docs[1:]:
        assert app["spec"]["source"]["repoURL"] == url
        assert app["spec"]["source"]["targetRevision"] == "main"
        assert app["spec"]["source"]["path"].startswith("gitops/")


# ---- the broken version, registered in a real MLflow with artifacts in LocalStack -----------------
@pytest.mark.integration
def test_register_broken_version_cannot_load_but_passes_promotion_checks(
    platform_env: Settings, tmp_path: Path
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    from pipelines.registry import check_artifacts, s3_client, signature_problem

    model_name = "e2e-broken"
    frame = pd.DataFrame({"Store": [1.0, 2.0, 3.0], "Promo": [0.0, 1.0, 0.0]})
    fitted = LinearRegression().fit(frame, np.array([1.0, 2.0, 3.0]))
    mlflow.set_tracking_uri(platform_env.tracking_uri)
    mlflow.set_experiment("e2e-broken")
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            fitted,
            name="model",
            signature=infer_signature(frame, fitted.predict(frame)),
            registered_model_name=model_name,
        )
    client = MlflowClient(platform_env.tracking_uri)
    source = client.search_model_versions(f"name='{model_name}'")[0].version
    client.set_model_version_tag(model_name, source, "data.source", "synthetic")
    client.set_model_version_tag(model_name, source, "gate.verdict", "pass")

    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(platform_env.state_dir),
        "SLUICE_S3_PORT": str(platform_env.s3_port),
        "SLUICE_MLFLOW_PORT": str(platform_env.mlflow_port),
        "SLUICE_MODEL_NAME": model_name,
    }
    proc = _run("register_broken_version", model_name, source, tmp_path=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    broken = proc.stdout.strip().splitlines()[-1]
    assert int(broken) == int(source) + 1

    version = client.get_model_version(model_name, broken)
    assert version.status == "READY"
    assert version.tags["data.source"] == "synthetic"
    assert "gate.verdict" not in version.tags  # never a copied verdict: the gate must judge it
    uri = client.get_model_version_download_uri(model_name, broken)
    assert uri.startswith("s3://")
    report = check_artifacts(uri, s3_client(platform_env))
    assert report.exists, report.detail
    assert signature_problem(report.mlmodel) is None
    assert yaml.safe_load(report.mlmodel or "")["flavors"]["python_function"]["loader_module"] == (
        "sluice_e2e_missing_loader"
    )
    with pytest.raises(ModuleNotFoundError, match="sluice_e2e_missing_loader"):
        mlflow.pyfunc.load_model(uri)
    mlflow.pyfunc.load_model(client.get_model_version_download_uri(model_name, source))  # the source loads


def test_every_python_heredoc_in_the_script_compiles() -> None:
    """The ones not run above (the V2 traffic generator, reading registered versions) at least parse."""
    blocks = re.findall(r"<<'PY'\n(.*?)^PY\n", E2E.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 9
    for index, code in enumerate(blocks):
        compile(code, f"{E2E.name} heredoc {index}", "exec")


# ---- a person's release, with git only, against a remote with a pre-receive hook ----------------
PRE_RECEIVE = """#!/bin/sh
# Stand-in for `sluice ci check`: v3 fails the gate unless the commit says Sluice-Force.
while read -r old new ref; do
  if git show "$new:gitops/models/rossmann/release.yaml" | grep -q '^version: 3' &&
     ! git log -1 --format=%B "$new" | grep -q '^Sluice-Force: '; then
    echo "rossmann v3 fails the evaluation gate" >&2
    exit 1
  fi
done
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_release_pushes_like_a_person_retries_after_ci_and_reports_refusals(tmp_path: Path) -> None:
    remote = tmp_path / "gitops.git"
    _git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    (remote / "hooks" / "pre-receive").write_text(PRE_RECEIVE)
    (remote / "hooks" / "pre-receive").chmod(0o755)
    ci = tmp_path / "ci"
    _git(tmp_path, "clone", "--quiet", str(remote), str(ci))
    for repo_config in (("user.name", "sluice-ci"), ("user.email", "ci@localhost")):
        _git(ci, "config", *repo_config)
    release = ci / "gitops" / "models" / "rossmann" / "release.yaml"
    release.parent.mkdir(parents=True)
    release.write_text("# Release file\nmodel: rossmann\nversion: 1\nrollout:\n  steps: [10, 50, 100]\n")
    _git(ci, "add", ".")
    _git(ci, "commit", "--quiet", "-m", "seed")
    _git(ci, "push", "--quiet", "origin", "HEAD:main")

    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    harness = f"""
source <(sed '/^main "\\$@"$/d' '{E2E}')
WORK_DIR='{work}'; LOG_DIR='{work}/logs'; BRANCH=main; MODEL=rossmann
git clone --quiet '{remote}' "$WORK_DIR/person"
git -C "$WORK_DIR/person" config user.name sluice-e2e
git -C "$WORK_DIR/person" config user.email e2e@localhost
gitops_state() {{ echo "phase=empty"; }}  # the real one is tested above; no uv here
refresh_argocd() {{ :; }}
release 1                                  # the seed already says 1: the file is touched
eval "real_$(declare -f sync_person)"
sync_person() {{                           # CI pushes between the person's fetch and push
  real_sync_person
  echo "phase: canary" > '{ci}/gitops/models/rossmann/status.yaml'
  git -C '{ci}' pull --quiet --rebase origin main
  git -C '{ci}' add . && git -C '{ci}' commit --quiet -m "ci: status" && git -C '{ci}' push --quiet origin HEAD:main
}}
release 2
sync_person() {{ real_sync_person; }}
release 3 "kind e2e: forced on purpose"
(release 3) && exit 9 || echo "refusal reported"
"""
    proc = subprocess.run(["bash", "-c", harness], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CI pushed first (try 1)" in proc.stderr
    assert "rossmann v3 fails the evaluation gate" in proc.stderr
    assert "refused the push of v3" in proc.stderr
    log = _git(remote, "log", "--format=%an|%s|%(trailers:key=Sluice-Force,valueonly)", "main").splitlines()
    subjects = [line for line in log if line]
    assert subjects[0] == "sluice-e2e|rossmann: release v3|kind e2e: forced on purpose"
    assert subjects[1] == "sluice-e2e|rossmann: release v2|"
    assert subjects[2] == "sluice-ci|ci: status|"
    assert subjects[3] == "sluice-e2e|rossmann: release v1|"
    text = _git(remote, "show", "main:gitops/models/rossmann/release.yaml")
    assert "version: 3\n" in text and "rollout:\n  steps: [10, 50, 100]\n" in text
    assert _git(remote, "show", "main~3:gitops/models/rossmann/release.yaml").count("# kind e2e: release v1") == 1
