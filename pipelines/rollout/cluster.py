"""The InferenceService as the cluster sees it: read from Kubernetes, or from the local stand-in.

`sluice ci rollout` works from Git and metrics alone; with a cluster it also waits until the cluster
runs the spec at HEAD, holds until the canary revision is ready, rolls back a revision that failed,
and names the revisions so the gates compare exactly the canary and the rolled-out revision.

Where the object comes from:
- `SLUICE_KUBE_API`: a base URL answering the Kubernetes API path of InferenceServices with plain
  HTTP (the local stand-in does: it applies Git the way ArgoCD + KServe + Knative would);
- else a kubeconfig (KUBECONFIG, ~/.kube/config) or in-cluster credentials, via `kubernetes`;
- else None: no cluster, nothing to wait for.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.gitops.manifest import A_VERSION, canary_percent, storage_uri
from pipelines.rollout.decide import ClusterView

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FAILED_REASONS = {"RevisionFailed", "RevisionMissing", "ContainerMissing", "ProgressDeadlineExceeded"}


def api_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def has_kubeconfig(env: Mapping[str, str]) -> bool:
    if env.get("KUBERNETES_SERVICE_HOST"):
        return True
    kubeconfig = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)


class ClusterError(RuntimeError):
    """A cluster is configured but the InferenceService could not be read."""


def read_service(name: str, namespace: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The InferenceService object; None when no cluster is configured or it does not exist yet."""
    e = os.environ if env is None else env
    base = e.get("SLUICE_KUBE_API")
    if base:
        url = base.rstrip("/") + api_path(namespace, name)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                obj = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ClusterError(f"{url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {url}: {exc}") from exc
        return obj if isinstance(obj, dict) else None
    if e.get("SLUICE_NO_CLUSTER") or not has_kubeconfig(e):
        return None
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        if e.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        obj = client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise ClusterError(f"reading InferenceService {namespace}/{name}: {exc.status} {exc.reason}") from exc
    except Exception as exc:
        raise ClusterError(f"reading InferenceService {namespace}/{name}: {exc}") from exc
    return obj if isinstance(obj, dict) else None


def view(obj: Mapping[str, Any], manifest: Mapping[str, Any]) -> ClusterView:
    """What the object says, held against the manifest Git declares at HEAD."""
    spec_pred = (obj.get("spec") or {}).get("predictor") or {}
    status = obj.get("status") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    meta = obj.get("metadata") or {}
    same_spec = (
        str((spec_pred.get("model") or {}).get("storageUri", "")) == storage_uri(manifest)
        and spec_pred.get("canaryTrafficPercent") == canary_percent(manifest)
        and (meta.get("annotations") or {}).get(A_VERSION)
        == (manifest.get("metadata") or {}).get("annotations", {}).get(A_VERSION)
    )
    reconciled = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    created, ready = pred.get("latestCreatedRevision"), pred.get("latestReadyRevision")
    traffic = list(pred.get("traffic") or [])
    share = sum(int(t.get("percent") or 0) for t in traffic if created and t.get("revisionName") == created)
    failure = None
    for c in status.get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in FAILED_REASONS:
            failure = f"{c.get('type')}: {c.get('reason')} {c.get('message', '')}".strip()
    return ClusterView(
        applied=same_spec and reconciled,
        canary_ready=bool(created) and created == ready,
        canary_percent=share,
        failure=failure,
        canary_revision=created,
        stable_revision=pred.get("latestRolledoutRevision"),
    )
