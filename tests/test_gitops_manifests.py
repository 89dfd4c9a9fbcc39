"""Static validation of the desired state in gitops/ and argocd/, with real validators.

Kubernetes kinds: kubernetes-validate (the official OpenAPI schemas, strict mode). KServe kinds:
KServe's own generated Python models, strictly (tests/kube_models.py). ArgoCD kinds: the
Application/AppProject CRD schemas vendored in tests/schemas/. Style: yamllint.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kube_models import KSERVE_KINDS, StrictError, build_strict, validate_argocd, validate_kserve
from yamllint import linter
from yamllint.config import YamlLintConfig

from pipelines.gitops.manifest import NAMESPACE, RUNTIME, SERVICE_ACCOUNT, SYNC_WAVE
from pipelines.gitops.release import RELEASE_FILENAME, load_release

ROOT = Path(__file__).resolve().parent.parent
# KServe 0.20+ needs Kubernetes >= 1.32; validate against the oldest supported API.
K8S_VERSION = "1.32"

# yamllint's defaults, minus the `---` requirement; 120 columns to fit the ArgoCD Lua block.
YAMLLINT = YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  document-start: disable\n"
    "  line-length: {max: 120}\n"
    "  comments: {min-spaces-from-content: 2}\n"
)


def yaml_files() -> list[Path]:
    files = [p for d in ("gitops", "argocd") for p in (ROOT / d).rglob("*") if p.suffix in (".yaml", ".yml")]
    return sorted(files)


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under gitops/ and argocd/ (release files are not objects)."""
    out = []
    for path in yaml_files():
        if path.name == RELEASE_FILENAME:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def wave(doc: dict[str, Any]) -> int:
    return int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_there_is_something_to_validate() -> None:
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"Namespace", "ServiceAccount", "ClusterServingRuntime", "Application", "AppProject"} <= kinds


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_yaml_parses_and_is_lint_clean(path: Path) -> None:
    text = path.read_text()
    list(yaml.safe_load_all(text))
    problems = [f"{p.line}:{p.column} {p.rule}: {p.desc}" for p in linter.run(text, YAMLLINT, str(path))]
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(("path", "doc"), manifests(), ids=lambda v: rel(v) if isinstance(v, Path) else v["kind"])
def test_manifest_is_valid(path: Path, doc: dict[str, Any]) -> None:
    assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{rel(path)}: not a Kubernetes object"
    key = (doc["apiVersion"], doc["kind"])
    if key in KSERVE_KINDS:
        validate_kserve(doc)
    elif doc["apiVersion"].startswith(("argoproj.io/", "monitoring.coreos.com/")):
        validate_argocd(doc)
    else:
        # Core kinds: fails on unknown fields (strict) and on schema violations.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", sorted((ROOT / "gitops" / "models").glob(f"*/{RELEASE_FILENAME}")), ids=rel)
def test_release_files_are_valid(path: Path) -> None:
    load_release(path)


# --- the validators really are strict (otherwise the tests above prove little) -----------------


def test_strict_kserve_check_catches_misspelt_and_wrongly_typed_fields() -> None:
    good = one("ClusterServingRuntime", RUNTIME)
    validate_kserve(good)
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["supportedModelFormats"][0]["autoselect"] = True
    with pytest.raises(StrictError, match=r"unknown field 'autoselect'.*did you mean 'autoSelect'"):
        validate_kserve(bad)
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(StrictError, match=r"containers\[0\]\.readinessProbe\.httpGet: unknown field 'paht'"):
        validate_kserve(bad)
    bad = yaml.safe_load(yaml.safe_dump(good))
    bad["spec"]["protocolVersions"] = "v2"
    with pytest.raises(StrictError, match="expected a list"):
        validate_kserve(bad)
    bad = yaml.safe_load(yaml.safe_dump(good))
    del bad["spec"]["containers"][0]["name"]
    with pytest.raises(StrictError, match="name"):  # V1Container's own required-field check
        validate_kserve(bad)
    with pytest.raises(StrictError, match="unknown field 'replica'"):
        build_strict({"replica": 1}, "V1beta1PredictorSpec")


def test_argocd_schema_check_catches_misspelt_fields() -> None:
    app = one("Application", "sluice-models")
    validate_argocd(app)
    bad = yaml.safe_load(yaml.safe_dump(app))
    bad["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    with pytest.raises(StrictError, match="selfheal"):
        validate_argocd(bad)
    bad = yaml.safe_load(yaml.safe_dump(app))
    del bad["spec"]["destination"]
    with pytest.raises(StrictError, match="destination"):
        validate_argocd(bad)


def test_kubernetes_validate_is_strict() -> None:
    ns = one("Namespace", NAMESPACE)
    bad = yaml.safe_load(yaml.safe_dump(ns))
    bad["metadata"]["lables"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


# --- platform ------------------------------------------------------------------------------------


def test_runtime_matches_the_sluice_contract() -> None:
    spec = one("ClusterServingRuntime", RUNTIME)["spec"]
    assert spec["protocolVersions"] == ["v2"]
    assert spec["supportedModelFormats"] == [{"name": "mlflow", "autoSelect": True, "priority": 1}]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # KServe finds the model server by this name
    assert re.fullmatch(r"ghcr\.io/sluice-dev/sluice-runtime:[\w.-]+", container["image"])
    command = "python -m serving --model-dir /mnt/models --http-port 8080 --grpc-port 8081"
    assert container["command"] == command.split(" ")
    assert container["args"] == ["--model_name={{.Name}}"]
    # Knative accepts exactly one port, named http1 or h2c.
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    annotations = spec["annotations"]
    assert annotations["prometheus.kserve.io/port"] == annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.kserve.io/path"] == annotations["prometheus.io/path"] == "/metrics"


def test_inference_log_receiver_runs_its_image_as_tested(tmp_path: Path) -> None:
    from serving.inference_log.config import load_config
    from serving.inference_log.server import Receiver

    deployment, service = one("Deployment", "sluice-inference-log"), one("Service", "sluice-inference-log")
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == NAMESPACE
    assert wave(deployment) < int(SYNC_WAVE)  # up before any model's logger sends
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    dockerfile = (ROOT / "serving" / "inference_log" / "Dockerfile").read_text()
    [cmd] = [json.loads(line[4:]) for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert container["command"] == cmd
    assert "USER 10001:10001" in dockerfile and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # The settings the receiver reads from this env: it listens on the declared port, spools to an
    # emptyDir, stops accepting before the volume's limit and drains within the grace period.
    env = {e["name"]: e for e in container["env"]}
    config = load_config({name: e["value"] for name, e in env.items() if "value" in e})
    assert config.host == "0.0.0.0" and [p["containerPort"] for p in container["ports"]] == [config.port]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    spool = volumes[mounts[str(config.spool_dir)]]["emptyDir"]
    assert config.max_spool_bytes < _quantity(spool["sizeLimit"])
    assert "/tmp" in mounts
    assert config.drain_timeout + 10 <= pod["terminationGracePeriodSeconds"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "sluice-s3"
    # Probes hit routes the server has; the Service reaches the container port by name.
    receiver = Receiver(load_config({}, spool_dir=tmp_path), s3=None)
    routes = {r.resource.canonical for r in receiver.app().router.routes() if r.resource is not None}
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _quantity(value: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(value[:-2]) * units[value[-2:]] if value[-2:] in units else int(value)


def test_service_account_names_the_s3_secret_and_no_secret_is_synced() -> None:
    sa = one("ServiceAccount", SERVICE_ACCOUNT)
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert sa["secrets"] == [{"name": "sluice-s3"}]
    synced = [p for p, d in manifests() if d["kind"] == "Secret" and "templates" not in p.parts]
    assert not synced, f"Secrets must not be committed to synced paths: {synced}"


def test_secret_template_holds_placeholders_only() -> None:
    (secret,) = yaml.safe_load_all((ROOT / "gitops/templates/sluice-s3-secret.yaml").read_text())
    assert secret["metadata"] == {
        "name": "sluice-s3",
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/part-of": "sluice"},
        "annotations": {
            "serving.kserve.io/s3-endpoint": "${S3_ENDPOINT}",
            "serving.kserve.io/s3-usehttps": "${S3_USE_HTTPS}",
            "serving.kserve.io/s3-region": "${AWS_REGION}",
        },
    }
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(re.fullmatch(r"\$\{[A-Z0-9_]+\}", v) for v in secret["stringData"].values())
    assert "data" not in secret


def test_sync_waves_put_platform_before_models() -> None:
    ns, sa = one("Namespace", NAMESPACE), one("ServiceAccount", SERVICE_ACCOUNT)
    runtime = one("ClusterServingRuntime", RUNTIME)
    assert wave(ns) < wave(sa) < int(SYNC_WAVE)
    assert wave(ns) < wave(runtime) < int(SYNC_WAVE)
    assert wave(one("Application", "sluice-platform")) < wave(one("Application", "sluice-models"))


# --- ArgoCD ----------------------------------------------------------------------------------------


def argocd_files(app: dict[str, Any]) -> list[str]:
    """The files ArgoCD's repo server would read for a directory app (reposerver findManifests):
    .yaml/.yml/.json/.jsonnet files, recursing only with directory.recurse, with include/exclude
    globs matched against the path relative to the app's path (gobwas/glob without separators,
    so '*' crosses '/', as in fnmatch)."""
    source = app["spec"]["source"]
    base = ROOT / source["path"]
    directory = source.get("directory", {})
    found = []
    for p in sorted(base.rglob("*") if directory.get("recurse") else base.glob("*")):
        if not p.is_file() or not re.search(r"\.(yaml|yml|json|jsonnet)$", p.name):
            continue
        relpath = str(p.relative_to(base))
        if directory.get("exclude") and fnmatch.fnmatchcase(relpath, directory["exclude"]):
            continue
        if directory.get("include") and not fnmatch.fnmatchcase(relpath, directory["include"]):
            continue
        found.append(relpath)
    return found


def test_models_app_syncs_rendered_manifests_but_never_release_or_status_files(tmp_path: Path) -> None:
    app = one("Application", "sluice-models")
    include = app["spec"]["source"]["directory"]["include"]
    assert fnmatch.fnmatchcase("rossmann/inferenceservice.yaml", include)
    assert fnmatch.fnmatchcase("other-model/inferenceservice.yaml", include)
    assert not fnmatch.fnmatchcase("rossmann/release.yaml", include)
    assert not fnmatch.fnmatchcase("rossmann/status.yaml", include)
    # Whatever is in gitops/models now (before or after the first promotion) is a valid object.
    for relpath in argocd_files(app):
        assert not relpath.endswith(RELEASE_FILENAME)
        for doc in yaml.safe_load_all((ROOT / "gitops/models" / relpath).read_text()):
            assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")


def test_platform_app_syncs_exactly_the_platform_objects() -> None:
    files = argocd_files(one("Application", "sluice-platform"))
    assert files == [
        "clusterservingruntime.yaml",
        "console.yaml",
        "grafana-dashboard.yaml",
        "inference-log.yaml",
        "jobs.yaml",
        "namespace.yaml",
        "pipelines-config.yaml",
        "prometheusrule.yaml",
        "pushgateway.yaml",
        "serviceaccount.yaml",
    ]


def test_root_app_syncs_the_child_applications() -> None:
    root = one("Application", "sluice-root")
    files = argocd_files(root)
    assert files == ["models.yaml", "platform.yaml"]


def test_applications_share_one_repo_and_the_sluice_project() -> None:
    project = one("AppProject", "sluice")
    apps = by_kind("Application")
    assert {a["metadata"]["name"] for a in apps} == {"sluice-root", "sluice-platform", "sluice-models"}
    repos = {a["spec"]["source"]["repoURL"] for a in apps}
    assert len(repos) == 1 and repos == set(project["spec"]["sourceRepos"])
    allowed = {(d["server"], d["namespace"]) for d in project["spec"]["destinations"]}
    for app in apps:
        spec = app["spec"]
        assert spec["project"] == "sluice"
        assert (spec["destination"]["server"], spec["destination"]["namespace"]) in allowed
        assert spec["syncPolicy"]["automated"]["prune"] is True
        assert spec["syncPolicy"]["automated"]["selfHeal"] is True
        assert (ROOT / spec["source"]["path"]).is_dir()
        assert "resources-finalizer.argocd.argoproj.io" in app["metadata"]["finalizers"]
    models = one("Application", "sluice-models")["spec"]
    assert {"ServerSideApply=true", "RespectIgnoreDifferences=true"} <= set(models["syncPolicy"]["syncOptions"])
    assert models["ignoreDifferences"][0]["kind"] == "InferenceService"


def test_project_whitelists_every_kind_the_apps_sync() -> None:
    project = one("AppProject", "sluice")["spec"]
    cluster = {(g["group"], g["kind"]) for g in project["clusterResourceWhitelist"]}
    namespaced = {(g["group"], g["kind"]) for g in project["namespaceResourceWhitelist"]}
    cluster_scoped = {"Namespace", "ClusterServingRuntime"}
    synced = [doc for path, doc in manifests() if "bootstrap" not in path.parts and "templates" not in path.parts]
    synced = [d for d in synced if d["metadata"]["name"] != "argocd-cm"]  # patched by hand, not synced
    synced.append({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"})  # rendered later
    for doc in synced:
        group = doc["apiVersion"].rpartition("/")[0]
        pair = (group, doc["kind"])
        assert pair in (cluster if doc["kind"] in cluster_scoped else namespaced), f"{pair} not whitelisted"
