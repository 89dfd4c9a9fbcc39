"""Static checks for what cannot run on a machine without a container engine.

terraform/cluster (Kind, Helm releases), .ci/kind-e2e.sh and the GitHub workflows need Docker, a
Kubernetes cluster or GitHub to run. Here they are checked with real tools: `terraform fmt`,
python-hcl2, `terraform console` evaluating the stack's own expressions, shellcheck, the GitHub
workflow JSON schema (check-jsonschema), and the `sluice` argument parser the workflows call.
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

import hcl2
import pytest
import yaml

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "terraform" / "cluster"
E2E = ROOT / ".ci" / "kind-e2e.sh"
WORKFLOWS = ROOT / ".github" / "workflows"
VENV_BIN = Path(sys.executable).parent

ALLOWED_SECRETS = {
    "MLFLOW_TRACKING_URI",
    "SLUICE_KUBE_API",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL",
    "PROMETHEUS_URL",
    "KUBECONFIG",
    "GITHUB_TOKEN",
}


# ---- helpers ---------------------------------------------------------------------------------
def _unquote(value: Any) -> Any:
    """python-hcl2 >= 7 keeps the quotes of keys and string literals; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        # and adds bookkeeping keys such as __is_block__ and __comments__.
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _tf_files() -> list[Path]:
    return sorted(CLUSTER.glob("*.tf"))


def _parsed() -> dict[str, dict[str, Any]]:
    out = {}
    for path in _tf_files():
        with path.open() as fh:
            out[path.name] = _unquote(hcl2.load(fh))
    return out


def _blocks(kind: str) -> dict[str, Any]:
    """All top-level blocks of one kind (variable, output, ...) keyed by name."""
    found: dict[str, Any] = {}
    for doc in _parsed().values():
        for block in doc.get(kind, []):
            found.update(block)
    return found


def _resources(rtype: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for doc in _parsed().values():
        for block in doc.get("resource", []):
            found.update(block.get(rtype, {}))
    return found


def _tf_text() -> str:
    return "\n".join(p.read_text() for p in _tf_files())


def _terraform() -> str:
    exe = shutil.which("terraform")
    if not exe:
        pytest.skip("terraform is not installed")
    return exe


def _tf_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = os.devnull  # no provider mirror or credentials needed
    env["TF_IN_AUTOMATION"] = "1"
    return env


def _load_workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _workflow_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def _run_scripts(doc: dict[str, Any]) -> str:
    return "\n".join(step["run"] for step in _workflow_steps(doc) if "run" in step)


# ---- terraform/cluster -----------------------------------------------------------------------
def test_cluster_stack_has_the_expected_files() -> None:
    names = {p.name for p in _tf_files()}
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf"} <= names


def test_terraform_fmt_check() -> None:
    exe = _terraform()
    proc = subprocess.run(
        [exe, "fmt", "-check", "-recursive", "-diff", str(CLUSTER)],
        capture_output=True,
        text=True,
        env=_tf_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", _tf_files(), ids=lambda p: p.name)
def test_every_tf_file_parses_with_hcl2(path: Path) -> None:
    with path.open() as fh:
        doc = hcl2.load(fh)
    assert doc, f"{path.name} is empty"


def test_every_referenced_variable_is_declared_and_every_declared_one_used() -> None:
    declared = set(_blocks("variable"))
    referenced = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", _tf_text()))
    assert referenced - declared == set(), f"undeclared: {sorted(referenced - declared)}"
    assert declared - referenced == set(), f"declared but unused: {sorted(declared - referenced)}"


def test_every_referenced_local_is_defined() -> None:
    defined: set[str] = set()
    for doc in _parsed().values():
        for block in doc.get("locals", []):
            defined |= set(block)
    referenced = set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", _tf_text()))
    assert referenced - defined == set(), f"undefined locals: {sorted(referenced - defined)}"


def test_every_variable_has_a_description_and_type() -> None:
    for name, spec in _blocks("variable").items():
        assert spec.get("description"), f"variable {name} has no description"
        assert spec.get("type"), f"variable {name} has no type"


def test_providers_are_pinned() -> None:
    versions = _parsed()["versions.tf"]
    terraform_block = versions["terraform"][0]
    assert terraform_block["required_version"].startswith(">=")
    providers: dict[str, Any] = {}
    for entry in terraform_block["required_providers"]:
        providers.update(entry)
    assert providers["kind"]["source"] == "tehcyx/kind"
    assert providers["helm"]["source"] == "hashicorp/helm"
    for name, spec in providers.items():
        assert re.match(r"^(~>|=)?\s*\d+\.\d+", spec["version"]), f"{name} is not pinned: {spec}"
    # The helm provider v3 syntax: `kubernetes = {...}` is an attribute (v2 used a block).
    assert re.search(r"provider \"helm\" \{\s*kubernetes = \{", (CLUSTER / "versions.tf").read_text())


def test_kind_cluster_uses_a_kubernetes_1_32_or_newer_node_image() -> None:
    default = _blocks("variable")["node_image"]["default"]
    match = re.match(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}$", default)
    assert match, f"node image not pinned by digest: {default}"
    assert int(match.group(1)) >= 32
    cluster = _resources("kind_cluster")["this"]
    assert cluster["node_image"] == "${var.node_image}"
    assert cluster["wait_for_ready"] is True


def test_helm_releases_are_versioned_and_ordered() -> None:
    releases = _resources("helm_release")
    expected = {
        "cert_manager": ("https://charts.jetstack.io", "cert-manager"),
        "knative_operator": ("https://knative.github.io/operator", "knative-operator"),
        "kserve_crd": ("oci://ghcr.io/kserve/charts", "kserve-crd"),
        "kserve_resources": ("oci://ghcr.io/kserve/charts", "kserve-resources"),
        "kserve_runtime_configs": ("oci://ghcr.io/kserve/charts", "kserve-runtime-configs"),
        "argocd": ("https://argoproj.github.io/argo-helm", "argo-cd"),
    }
    for name, (repository, chart) in expected.items():
        release = releases[name]
        assert release["repository"] == repository, name
        assert release["chart"] == chart, name
        assert release["version"].startswith("${var."), f"{name} has no pinned version"
    # Local chart releases render the manifests they are given.
    for name in ("knative_serving", "s3_credentials", "argocd_bootstrap"):
        assert releases[name]["chart"] == "${local.manifests_chart}"
    deps = {name: " ".join(map(str, r.get("depends_on", []))) for name, r in releases.items()}
    assert "terraform_data.knative_ready" in deps["kserve_resources"]
    assert "helm_release.cert_manager" in deps["kserve_resources"]
    assert "helm_release.kserve_crd" in deps["kserve_resources"]
    assert "helm_release.kserve_resources" in deps["kserve_runtime_configs"]
    for needed in ("argocd", "kserve_resources", "s3_credentials"):
        assert f"helm_release.{needed}" in deps["argocd_bootstrap"]
    # KServe in Knative mode behind Kourier.
    resources_values = str(releases["kserve_resources"]["values"])
    assert re.search(r"deploymentMode\s*=\s*\\?\"Knative", resources_values), resources_values
    assert "disableIstioVirtualHost" in resources_values


def test_kserve_version_default_is_0_20_or_newer() -> None:
    default = _blocks("variable")["kserve_version"]["default"]
    major, minor = (int(x) for x in re.match(r"v(\d+)\.(\d+)\.", default).groups())  # type: ignore[union-attr]
    assert (major, minor) >= (0, 20)


def test_manifests_chart_is_a_valid_chart() -> None:
    chart = CLUSTER / "charts" / "manifests"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] and meta["version"]
    assert yaml.safe_load((chart / "values.yaml").read_text()) == {"manifests": []}
    template = (chart / "templates" / "manifests.yaml").read_text()
    assert "range" in template and ".Values.manifests" in template


def test_manifests_chart_renders_with_helm(tmp_path: Path) -> None:
    helm = shutil.which("helm")
    if not helm:
        pytest.skip("helm is not installed on this machine (the kind e2e uses it)")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"manifests": ["kind: A\nmetadata:\n  name: a\n", "kind: B\n"]}))
    out = subprocess.run(
        [helm, "template", "t", str(CLUSTER / "charts" / "manifests"), "-f", str(values)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds == ["A", "B"]


# ---- terraform/cluster expressions, evaluated by terraform itself ---------------------------------
ROOT_APP_FIXTURE = """\
# comment-only preamble
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: sluice
  namespace: argocd
spec:
  sourceRepos: ["https://github.com/example/sluice.git"]
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: sluice-root
  namespace: argocd
spec:
  project: sluice
  source:
    repoURL: https://github.com/example/sluice.git
    targetRevision: HEAD
    path: gitops
  destination:
    server: https://kubernetes.default.svc
    namespace: argocd
"""

CM_PATCH_FIXTURE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  resource.customizations.ignoreDifferences.serving.kserve.io_InferenceService: |
    jqPathExpressions: [".metadata.annotations"]
  resource.customizations.health.serving.kserve.io_InferenceService: |
    -- inline copy, replaced by the Lua file
"""


def _locals_module(tmp_path: Path) -> Path:
    """variables.tf plus the locals block of main.tf: no providers, so `terraform console` runs."""
    module = tmp_path / "module"
    module.mkdir()
    shutil.copy(CLUSTER / "variables.tf", module / "variables.tf")
    main = (CLUSTER / "main.tf").read_text()
    match = re.search(r"^locals \{\n.*?^\}\n", main, flags=re.S | re.M)
    assert match, "main.tf has no top-level locals block"
    (module / "locals.tf").write_text(match.group(0))
    return module


def _console(module: Path, expression: str, variables: dict[str, str], sensitive: bool = False) -> Any:
    args = [_terraform(), "console", "-no-color"]
    for key, value in variables.items():
        args += ["-var", f"{key}={value}"]
    proc = subprocess.run(
        args,
        input=f"nonsensitive(jsonencode({expression}))\n" if sensitive else f"jsonencode({expression})\n",
        capture_output=True,
        text=True,
        cwd=module,
        env=_tf_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(json.loads(proc.stdout.strip()))


def test_terraform_evaluates_bootstrap_and_argocd_config(tmp_path: Path) -> None:
    _terraform()
    module = _locals_module(tmp_path)
    argocd = tmp_path / "argocd"
    (argocd / "health").mkdir(parents=True)
    (argocd / "root-app.yaml").write_text(ROOT_APP_FIXTURE)
    (argocd / "argocd-cm-patch.yaml").write_text(CM_PATCH_FIXTURE)
    lua = 'hs = {status = "Healthy"}\nreturn hs\n'
    (argocd / "health" / "inferenceservice.lua").write_text(lua)
    variables = {
        "argocd_bootstrap_manifests": '["../argocd/root-app.yaml"]',
        "argocd_cm_patch_path": "../argocd/argocd-cm-patch.yaml",
        "argocd_health_lua_path": "../argocd/health/inferenceservice.lua",
        "git_repo_url": "git://172.18.0.1:9418/sluice.git",
        "git_revision": "main",
        "s3_endpoint": "172.18.0.1:4566",
    }

    docs = [yaml.safe_load(d) for d in _console(module, "local.bootstrap_manifests", variables)]
    assert [d["kind"] for d in docs] == ["AppProject", "Application"]
    project, app = docs
    assert project["spec"]["sourceRepos"] == [
        "https://github.com/example/sluice.git",
        "git://172.18.0.1:9418/sluice.git",
    ]
    assert app["spec"]["source"] == {
        "repoURL": "git://172.18.0.1:9418/sluice.git",
        "targetRevision": "main",
        "path": "gitops",
    }
    assert app["spec"]["destination"]["server"] == "https://kubernetes.default.svc"

    cm = _console(module, "local.argocd_cm", variables)
    assert cm["resource.customizations.health.serving.kserve.io_InferenceService"] == lua
    assert "resource.customizations.ignoreDifferences.serving.kserve.io_InferenceService" in cm
    assert cm["timeout.reconciliation"] == "30s"

    secret = _console(module, "local.s3_secret", variables, sensitive=True)
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "172.18.0.1:4566",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "0",
        "serving.kserve.io/s3-region": "us-east-1",
    }
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    knative = _console(module, "local.knative_serving", variables)
    assert knative["kind"] == "KnativeServing"
    assert knative["spec"]["ingress"]["kourier"]["enabled"] is True
    assert knative["spec"]["config"]["network"]["ingress-class"] == "kourier.ingress.networking.knative.dev"

    # Without git_repo_url the files are applied as written.
    variables["git_repo_url"] = ""
    docs = [yaml.safe_load(d) for d in _console(module, "local.bootstrap_manifests", variables)]
    assert docs[1]["spec"]["source"]["repoURL"] == "https://github.com/example/sluice.git"


def test_terraform_evaluates_the_real_argocd_files(tmp_path: Path) -> None:
    """The same expressions on the repository's argocd/ files."""
    _terraform()
    needed = [
        ROOT / "argocd" / "bootstrap" / "project.yaml",
        ROOT / "argocd" / "bootstrap" / "root-application.yaml",
        ROOT / "argocd" / "health" / "inferenceservice.lua",
    ]
    missing = [str(p.relative_to(ROOT)) for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"not written yet: {', '.join(missing)}")
    module = _locals_module(tmp_path)
    rel = os.path.relpath(ROOT, module)
    variables = {
        "argocd_bootstrap_manifests": json.dumps(
            [f"{rel}/argocd/bootstrap/project.yaml", f"{rel}/argocd/bootstrap/root-application.yaml"]
        ),
        "argocd_cm_patch_path": f"{rel}/argocd/argocd-cm-patch.yaml",
        "argocd_health_lua_path": f"{rel}/argocd/health/inferenceservice.lua",
        "git_repo_url": "git://172.18.0.1:9418/sluice.git",
    }
    docs = [yaml.safe_load(d) for d in _console(module, "local.bootstrap_manifests", variables)]
    assert [d["kind"] for d in docs] == ["AppProject", "Application"]
    project, app = docs
    assert "git://172.18.0.1:9418/sluice.git" in project["spec"]["sourceRepos"]
    assert app["spec"]["source"]["repoURL"] == "git://172.18.0.1:9418/sluice.git"
    assert app["spec"]["source"]["targetRevision"] == "main"
    cm = _console(module, "local.argocd_cm", variables)
    lua = (ROOT / "argocd" / "health" / "inferenceservice.lua").read_text()
    assert cm["resource.customizations.health.serving.kserve.io_InferenceService"] == lua
    patch = yaml.safe_load((ROOT / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert set(patch["data"]) <= set(cm), "argocd-cm-patch.yaml data is not all in argocd-cm"


def test_module_relative_paths_point_into_the_repository() -> None:
    variables = _blocks("variable")
    expected = {
        "argocd_cm_patch_path": ROOT / "argocd" / "argocd-cm-patch.yaml",
        "argocd_health_lua_path": ROOT / "argocd" / "health" / "inferenceservice.lua",
    }
    for name, target in expected.items():
        assert (CLUSTER / variables[name]["default"]).resolve() == target, name
    bootstrap = [(CLUSTER / rel).resolve() for rel in variables["argocd_bootstrap_manifests"]["default"]]
    assert bootstrap == [
        ROOT / "argocd" / "bootstrap" / "project.yaml",
        ROOT / "argocd" / "bootstrap" / "root-application.yaml",
    ]


# ---- .ci/kind-e2e.sh -------------------------------------------------------------------------
def test_e2e_script_is_strict_bash() -> None:
    text = E2E.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(E2E, os.X_OK), ".ci/kind-e2e.sh is not executable"
    subprocess.run(["bash", "-n", str(E2E)], check=True, timeout=30)


def test_e2e_script_passes_shellcheck() -> None:
    exe = shutil.which("shellcheck")
    if not exe:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run([exe, "-x", str(E2E)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_e2e_script_help() -> None:
    proc = subprocess.run(["bash", str(E2E), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for word in ("--keep", "--skip-build", "--check", "SLUICE_E2E_HOST_ADDR", "SLUICE_RUNTIME_IMAGE"):
        assert word in proc.stdout


def test_e2e_script_rejects_unknown_arguments() -> None:
    proc = subprocess.run(["bash", str(E2E), "--nope"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "unknown argument: --nope" in proc.stderr


def test_e2e_script_names_missing_prerequisites(tmp_path: Path) -> None:
    """With only bash and coreutils on PATH it lists every missing tool with a hint, and stops."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "date", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(E2E), "--check"],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        timeout=30,
    )
    assert proc.returncode == 1
    for tool in ("docker", "kind", "kubectl", "terraform", "helm", "git", "uv", "make", "curl"):
        assert re.search(rf"missing: {tool}\s+\S", proc.stderr), (tool, proc.stderr)
    assert "install the missing tools" in proc.stderr


def test_e2e_script_drives_the_documented_flow() -> None:
    text = E2E.read_text()
    for fragment in (
        "make up",
        "make down",
        "terraform/cluster",
        "-target=kind_cluster.this",
        "serving/Dockerfile",
        "kind load docker-image",
        "git push",
        "Sluice-Force:",
        "git daemon",
        "argocd.argoproj.io/refresh",
        "--for=condition=Ready",
        "/v2/models/",
        "/infer",
        "kind delete cluster",
    ):
        assert fragment in text, fragment


def test_sluice_commands_used_by_ci_exist() -> None:
    """The subcommands and flags the workflows and the e2e script call parse."""
    parser = build_parser()
    for argv in (
        ["ci", "promote", "--push"],
        ["ci", "promote", "--push", "--model", "rossmann", "--repo", "/tmp/x"],
        ["ci", "rollout", "--push"],
        ["ci", "rollout", "--push", "--model", "rossmann", "--prometheus-url", "http://prom:9090"],
        ["ci", "sync", "--push"],
        ["ci", "check", "--repo", ".", "--rev", "HEAD", "--base", "abc"],
        ["ci", "log", "-f"],
        ["ci", "run", "promote", "--input", "model=rossmann", "--wait"],
        ["history", "--repo", ".", "--model", "rossmann"],
        ["train", "--preset", "quick"],
        ["generate-data", "--out", "/tmp/d", "--stores", "3", "--days", "60"],
    ):
        args = parser.parse_args(argv)
        assert args.command == argv[0]


def test_make_targets_used_by_ci_exist() -> None:
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:", (ROOT / "Makefile").read_text(), flags=re.M))
    assert {"test", "lint", "up", "down", "train", "demo", "ci-log"} <= targets, sorted(targets)


# ---- .github/workflows -----------------------------------------------------------------------
WORKFLOW_FILES = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
GITOPS_WORKFLOWS = ["promote.yml", "rollout.yml", "sync.yml", "check.yml"]


def test_the_workflows_are_all_here() -> None:
    assert {"ci.yml", "check.yml", "promote.yml", "rollout.yml", "sync.yml", "kind-e2e.yml"} <= set(WORKFLOW_FILES)


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_matches_the_github_schema(name: str) -> None:
    exe = VENV_BIN / "check-jsonschema"
    if not exe.exists():
        exe = Path(shutil.which("check-jsonschema") or "")
    assert exe.is_file(), "check-jsonschema is a dev dependency"
    proc = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOWS / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_secrets_are_referenced_by_name_only(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    used = set(re.findall(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used <= ALLOWED_SECRETS, used - ALLOWED_SECRETS
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key is written in the workflow"
    assert "secrets[" not in text


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_run_scripts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    exe = shutil.which("shellcheck")
    if not exe:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    doc = _load_workflow(name)
    for job_name, job in doc["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            # GitHub runs `bash --noprofile --norc -eo pipefail {0}`; expressions are substituted first.
            script = re.sub(r"\$\{\{.*?\}\}", "GHA_EXPR", step["run"])
            path = tmp_path / f"{job_name}-{index}.sh"
            path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script)
            proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"{name} {job_name} step {index}:\n{proc.stdout}"


def test_ci_workflow_runs_the_tests_without_real_data() -> None:
    doc = _load_workflow("ci.yml")
    assert {"push", "pull_request", "workflow_dispatch"} <= set(doc["on"])
    assert doc["on"]["push"]["paths-ignore"] == ["gitops/models/**"]  # release changes have their own workflows
    scripts = _run_scripts(doc)
    assert "make lint" in scripts and "pytest $PYTEST_ARGS" in scripts
    assert "uv sync --frozen" in scripts
    uses = [s.get("uses", "") for s in _workflow_steps(doc)]
    assert any(u.startswith("astral-sh/setup-uv@") for u in uses)
    python = [s for s in _workflow_steps(doc) if s.get("uses", "").startswith("actions/setup-python@")]
    assert python and str(python[0]["with"]["python-version"]) == "3.11"
    # ROSSMANN_DATA_DIR is never given a value, so the real-data test skips.
    assert "ROSSMANN_DATA_DIR:" not in (WORKFLOWS / "ci.yml").read_text()
    assert "unset ROSSMANN_DATA_DIR" in scripts


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("promote.yml", "sluice ci promote --push"),
        ("rollout.yml", "sluice ci rollout --push"),
        ("sync.yml", "sluice ci sync --push"),
        ("check.yml", "sluice ci check --repo . --rev HEAD"),
    ],
)
def test_each_gitops_workflow_step_is_one_sluice_ci_command(name: str, command: str) -> None:
    """No release-file parsing and no S3 endpoint derivation in YAML: one command per step."""
    doc = _load_workflow(name)
    scripts = _run_scripts(doc)
    assert command in scripts
    assert "python3 -" not in scripts and "<<'PY'" not in scripts and "yaml" not in scripts.lower()
    (job,) = doc["jobs"].values()
    assert job["env"]["SLUICE_S3_ENDPOINT_OVERRIDE"] == "0"  # the endpoint comes from the secret, else AWS
    for secret in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        assert job["env"][secret] == f"${{{{ secrets.{secret} }}}}"
    if name != "check.yml":
        assert doc["concurrency"] == {"group": "sluice-gitops", "cancel-in-progress": False}
        assert job["permissions"]["contents"] == "write"
        assert "vars.SLUICE_BOT_NAME || 'github-actions[bot]'" in scripts


def test_promote_and_rollout_triggers() -> None:
    promote = _load_workflow("promote.yml")["on"]
    assert promote["push"] == {"branches": ["main"], "paths": ["gitops/models/*/release.yaml"]}
    rollout = _load_workflow("rollout.yml")
    assert rollout["on"]["schedule"] == [{"cron": "*/10 * * * *"}]
    assert rollout["jobs"]["step"]["env"]["PROMETHEUS_URL"] == "${{ secrets.PROMETHEUS_URL }}"
    assert "schedule" in _load_workflow("sync.yml")["on"]
    assert set(_load_workflow("check.yml")["on"]) == {"pull_request", "workflow_dispatch"}


def test_kind_e2e_workflow() -> None:
    doc = _load_workflow("kind-e2e.yml")
    assert "workflow_dispatch" in doc["on"]
    assert doc["on"]["schedule"], "runs weekly"
    job = doc["jobs"]["e2e"]
    assert job["runs-on"] == "ubuntu-latest"
    assert ".ci/kind-e2e.sh" in _run_scripts(doc)
    assert job["timeout-minutes"] <= 90


# ---- the Python inside .ci/kind-e2e.sh, run on the repository's own files ----------------------
def _script_python(function: str) -> str:
    """The `<<'PY'` heredoc inside a function of .ci/kind-e2e.sh."""
    text = E2E.read_text()
    body = re.search(rf"^{function}\(\) \{{\n(.*?)^\}}\n", text, flags=re.S | re.M)
    assert body, f"no function {function} in {E2E.name}"
    code = re.search(r"<<'PY'\n(.*?)^PY\n", body.group(1), flags=re.S | re.M)
    assert code, f"{function} has no python heredoc"
    return code.group(1)


def _run_script_python(function: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"{function}.py"
    script.write_text(_script_python(function))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)


def test_e2e_finds_the_runtime_image_and_root_app_in_the_repository(tmp_path: Path) -> None:
    if not list((ROOT / "gitops").rglob("*runtime*.yaml")):
        pytest.skip("no ServingRuntime under gitops/ yet")
    proc = _run_script_python("gitops_runtime_image", str(ROOT / "gitops"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"^[\w.\-/]+:[\w.\-]+$", proc.stdout.strip()), proc.stdout
    if not (ROOT / "argocd" / "apps").is_dir():
        pytest.skip("argocd/apps/ not written yet")
    proc = _run_script_python("argocd_apps", str(ROOT / "argocd" / "apps"), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_e2e_reads_the_storage_uri_git_declares(tmp_path: Path) -> None:
    gitops = tmp_path / "gitops" / "models" / "rossmann"
    gitops.mkdir(parents=True)
    (gitops / "release.yaml").write_text("model: rossmann\nversion: 2\n")
    (gitops / "inferenceservice.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "rossmann", "namespace": "sluice-serving"},
                "spec": {"predictor": {"model": {"storageUri": "s3://sluice-models/1/models/m-1/artifacts"}}},
            }
        )
    )
    proc = _run_script_python("git_storage_uri", str(tmp_path / "gitops"), "rossmann", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "s3://sluice-models/1/models/m-1/artifacts"
