"""Optional: the InferenceService status from a cluster, when one is configured.

`sluice rollout step` works from Git and metrics alone; with a kubeconfig (or in a pod) it also
reads `status.components.predictor` and the conditions, to wait until the cluster applied the last
commit and to roll back a canary whose revision failed. No kubeconfig, no cluster: None, silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FAILED_REASONS = {"RevisionFailed", "RevisionMissing", "ContainerMissing", "ProgressDeadlineExceeded"}


@dataclass(frozen=True)
class ServiceStatus:
    generation: int
    observed_generation: int
    latest_created: str | None
    latest_ready: str | None
    latest_rolled_out: str | None
    traffic: list[dict[str, Any]]
    failure: str | None  # reason and message of a failed condition, if any

    @property
    def applied(self) -> bool:
        return self.observed_generation >= self.generation

    def latest_percent(self) -> int | None:
        """Traffic share of the newest revision, as the cluster routes it now."""
        for t in self.traffic:
            if t.get("latestRevision") or t.get("revisionName") == self.latest_created:
                return int(t.get("percent") or 0)
        return None


def parse_status(obj: dict[str, Any]) -> ServiceStatus:
    status = obj.get("status") or {}
    pred = (status.get("components") or {}).get("predictor") or {}
    failure = None
    for c in status.get("conditions") or []:
        if c.get("status") == "False" and c.get("reason") in FAILED_REASONS:
            failure = f"{c.get('type')}: {c.get('reason')} {c.get('message', '')}".strip()
    return ServiceStatus(
        generation=int(obj.get("metadata", {}).get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        latest_created=pred.get("latestCreatedRevision"),
        latest_ready=pred.get("latestReadyRevision"),
        latest_rolled_out=pred.get("latestRolledoutRevision"),
        traffic=list(pred.get("traffic") or []),
        failure=failure,
    )


def has_cluster_config() -> bool:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)


def read_status(name: str, namespace: str) -> ServiceStatus | None:
    """The InferenceService status, or None without a cluster (or if it cannot be read)."""
    if os.environ.get("SLUICE_NO_CLUSTER") or not has_cluster_config():
        return None
    try:
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        obj = client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception:  # no cluster, no permission, no such service: rollout works from Git alone
        return None
    return parse_status(obj) if isinstance(obj, dict) else None
