"""checkov over terraform/ and the Kubernetes manifests; every exception justified where it applies.

checkov lives in a virtualenv of its own under the state dir (`make setup` builds it): its pins
would downgrade boto3 and pytest in the project's environment.

What is scanned:
- terraform/storage and terraform/cluster (framework `terraform`). checkov has no policy for the
  kind and helm providers, so the cluster stack yields no result: what its Helm releases install is
  upstream's charts, not scanned here.
- gitops/ and argocd/ (framework `kubernetes`).
- the predictor pod KServe builds for a model. checkov knows no KServe kind, so the container
  written in the ClusterServingRuntime would go unchecked; `predictor_pod` merges it with a rendered
  InferenceService the way KServe's controller does (runtime container patched by the predictor's
  model fields, runtime pod fields patched by the predictor's, annotations of both) and checkov
  checks that Pod. The containers others add to it (Knative's queue-proxy, KServe's storage
  initializer) are theirs, configured by their own charts, and not part of this pod.

Exceptions: `# checkov:skip=CKV_...: reason` inside the terraform resource; for the runtime,
`checkov.io/skipN: CKV_...=reason` in the ClusterServingRuntime's own annotations (metadata, not
`spec.annotations`: those KServe copies onto every pod, and editing a reason would roll out a new
revision of every model), carried over to the rendered pod. Skips without a real reason fail.

    python -m pipelines.security.checkov     # exit 1 on a failed check or an unjustified skip
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import REPO_ROOT, Settings, load_settings
from pipelines.platform.processes import Echo
from pipelines.platform.toolvenv import ensure_tool_venv

CHECKOV_REQUIREMENTS = ("checkov==3.3.30",)
TERRAFORM_DIRS = ("terraform/storage", "terraform/cluster")
MANIFEST_DIRS = ("gitops", "argocd")
RUNTIME_FILE = "gitops/platform/clusterservingruntime.yaml"
SAMPLE_RELEASE = "gitops/models/rossmann/release.yaml"
POD_FILE = "predictor-pod.yaml"
SKIP_PREFIX = "checkov.io/skip"
# A skip needs a reason a reviewer can weigh; checkov's own default text does not count.
MIN_REASON = 20


def checkov_venv(settings: Settings) -> Path:
    return settings.state_dir / "checkov-venv"


def ensure_checkov_venv(settings: Settings, echo: Echo = print) -> Path:
    """Create or update checkov's virtualenv; returns the `checkov` executable."""
    python = ensure_tool_venv(
        checkov_venv(settings), CHECKOV_REQUIREMENTS, label="checkov", took="~30 s from PyPI", echo=echo
    )
    return python.parent / "checkov"


# --- the predictor pod -------------------------------------------------------------------------------


# Kubernetes' strategic-merge keys for the lists that can meet in a runtime and a predictor.
_MERGE_KEYS = {"env": "name", "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge as KServe applies the predictor to the runtime: maps merge key by key, the
    lists in _MERGE_KEYS merge by their key, `args` concatenate (the runtime's first, as KServe's
    MergeRuntimeContainers does), any other list is replaced."""
    if isinstance(base, Mapping) and isinstance(patch, Mapping):
        out = dict(base)
        for key, value in patch.items():
            if key not in out:
                out[key] = value
            elif key in _MERGE_KEYS:
                by_key = {item[_MERGE_KEYS[key]]: item for item in out[key]}
                for item in value:
                    by_key[item[_MERGE_KEYS[key]]] = _merge(by_key.get(item[_MERGE_KEYS[key]], {}), item)
                out[key] = list(by_key.values())
            elif key == "args":
                out[key] = [*out[key], *value]
            else:
                out[key] = _merge(out[key], value)
        return out
    return patch


def predictor_pod(runtime: Mapping[str, Any], isvc: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod KServe's controller builds from a ServingRuntime and an InferenceService using it."""
    from kubernetes.client import V1Container, V1PodSpec

    spec = runtime["spec"]
    predictor = isvc["spec"]["predictor"]
    container_fields = set(V1Container.attribute_map.values())
    pod_fields = set(V1PodSpec.attribute_map.values())
    (runtime_container,) = spec["containers"]
    container = _merge(runtime_container, {k: v for k, v in predictor["model"].items() if k in container_fields})
    runtime_pod = {k: v for k, v in spec.items() if k in pod_fields and k != "containers"}
    pod_spec = _merge(runtime_pod, {k: v for k, v in predictor.items() if k in pod_fields})
    meta = isvc["metadata"]
    # Not KServe's doing: the runtime's checkov exceptions (its own metadata) justify the container
    # it defines, so the rendered pod carries them for checkov to read.
    skips = {k: v for k, v in runtime["metadata"].get("annotations", {}).items() if k.startswith(SKIP_PREFIX)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-predictor",
            "namespace": meta["namespace"],
            "labels": {**spec.get("labels", {}), **meta.get("labels", {})},
            "annotations": {**spec.get("annotations", {}), **meta.get("annotations", {}), **skips},
        },
        "spec": {**pod_spec, "containers": [container]},
    }


def sample_predictor_pod(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The predictor pod for the example release, as CI would render its InferenceService."""
    from pipelines.gitops.manifest import ResolvedVersion, render_inference_service
    from pipelines.gitops.release import load_release

    release = load_release(root / SAMPLE_RELEASE)
    version = ResolvedVersion(release.model, "1", "0" * 32, f"s3://sluice-models/1/models/m-{'0' * 32}/artifacts/")
    isvc = render_inference_service(release, version, None)
    runtime = yaml.safe_load((root / RUNTIME_FILE).read_text())
    return predictor_pod(runtime, isvc)


# --- running checkov ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    check_id: str
    name: str
    resource: str
    file: str  # relative to the repository, or the rendered pod's file name
    outcome: str  # "passed", "failed" or "skipped"
    reason: str = ""  # a skip's justification

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{self.outcome.upper()} {self.check_id} {self.resource} ({self.file}) {self.name}{why}"


@dataclass
class Scan:
    results: list[Result] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)
    version: str = ""

    def of(self, outcome: str) -> list[Result]:
        return [r for r in self.results if r.outcome == outcome]

    def unjustified(self) -> list[Result]:
        """Failed checks, and skips whose reason says nothing."""
        weak = [
            r for r in self.of("skipped") if len(r.reason.strip()) < MIN_REASON or r.reason == "No comment provided"
        ]
        return [*self.of("failed"), *weak]


def _relative(path: str, root: Path, rendered: Path) -> str:
    p = Path(path)
    for base, prefix in ((rendered, "<rendered>/"), (root, "")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base))
    return path


def _documents(text: str) -> list[Any]:
    """checkov prints one JSON document per scanned directory, one after the other."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
    return docs


def parse_report(text: str, root: Path, rendered: Path) -> Scan:
    """checkov's JSON output: per directory, one report per framework (a list), or one report, or a
    bare summary when nothing there was checked. With several directories checkov 3.3 repeats
    earlier directories' terraform results in later reports: each result counts once."""
    scan = Scan()
    seen: set[Result] = set()
    reports = [r for doc in _documents(text) for r in (doc if isinstance(doc, list) else [doc])]
    for report in reports:
        summary = report.get("summary", report)
        scan.version = str(summary.get("checkov_version", scan.version))
        results = report.get("results", {})
        for outcome in ("passed", "failed", "skipped"):
            for r in results.get(f"{outcome}_checks", []):
                where = _relative(r.get("file_abs_path") or r["file_path"], root, rendered)
                reason = ((r.get("check_result") or {}).get("suppress_comment") or "").strip()
                result = Result(r["check_id"], r["check_name"], r["resource"], where, outcome, reason)
                if result not in seen:
                    seen.add(result)
                    scan.results.append(result)
        errors = [_relative(p, root, rendered) for p in results.get("parsing_errors", [])]
        scan.parsing_errors += [e for e in errors if e not in scan.parsing_errors]
    return scan


def run_checkov(checkov: Path, root: Path = REPO_ROOT) -> Scan:
    """checkov over TERRAFORM_DIRS, MANIFEST_DIRS and the sample predictor pod, in one run."""
    with tempfile.TemporaryDirectory(prefix="sluice-checkov-") as tmp:
        rendered = Path(tmp).resolve()
        header = f"# Rendered from {RUNTIME_FILE} and {SAMPLE_RELEASE} (pipelines/security/checkov.py)\n"
        (rendered / POD_FILE).write_text(header + yaml.safe_dump(sample_predictor_pod(root), sort_keys=False))
        dirs = [str(root / d) for d in (*TERRAFORM_DIRS, *MANIFEST_DIRS)] + [str(rendered)]
        cmd = [str(checkov), *(a for d in dirs for a in ("-d", d))]
        cmd += ["--framework", "terraform", "kubernetes", "--output", "json", "--soft-fail", "--skip-download"]
        # No network: no guideline download, no ID mapping, no update check.
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "LOG_LEVEL": "ERROR"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"checkov failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return parse_report(proc.stdout, root.resolve(), rendered)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    checkov = ensure_checkov_venv(load_settings())
    scan = run_checkov(checkov)
    for r in scan.of("skipped"):
        print(r.describe())
    bad = scan.unjustified()
    for r in bad:
        print(r.describe())
    for p in scan.parsing_errors:
        print(f"PARSING ERROR {p}")
    passed, skipped = len(scan.of("passed")), len(scan.of("skipped"))
    print(
        f"checkov {scan.version}: {passed} passed, {skipped} skipped with a reason, "
        f"{len(bad)} failed or unjustified, {len(scan.parsing_errors)} parsing errors"
    )
    return 1 if bad or scan.parsing_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
