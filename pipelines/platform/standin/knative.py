"""KServe + Knative's revision and traffic rules for one InferenceService, as pure functions.

What the stand-in must reproduce so that the local rollout behaves as the cluster's (sources: KServe
`pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go` and
`pkg/apis/serving/v1beta1/inference_service_status.go` PropagateStatus; Knative Serving's route
resolution of `latestRevision: true`):

- every change of the revision template (the predictor spec, labels, annotations; not the traffic
  split) creates a new revision, numbered `<name>-predictor-00001`, `-00002`, ...; going back to an
  earlier spec creates a new revision too;
- with `canaryTrafficPercent` set and a rolled-out revision known, the route is
  [latestRevision: N%, <latestRolledoutRevision> (tag prev): 100-N%], otherwise [latestRevision: 100%];
- `latestRevision` means the latest *ready* revision: while a new revision is not ready, its share
  goes to the previous ready one;
- latestRolledoutRevision moves to the latest ready revision when it gets 100% through
  `latestRevision`, and the previous one is kept as previousRolledoutRevision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.gitops.manifest import canary_percent, manifest_version, revision_digest, storage_uri


@dataclass(frozen=True)
class Revision:
    name: str
    digest: str
    version: str
    storage_uri: str
    min_replicas: int
    number: int
    env: tuple[tuple[str, str], ...] = ()  # the predictor container's env, as Kubernetes would set it


@dataclass(frozen=True)
class Target:
    revision: str
    percent: int
    latest: bool
    tag: str = ""


@dataclass(frozen=True)
class Service:
    """One InferenceService as the stand-in's controller keeps it (persisted across restarts)."""

    name: str
    namespace: str
    manifest: dict[str, Any]
    generation: int = 0
    revisions: tuple[Revision, ...] = ()
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None

    @property
    def latest_created(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    def revision(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)


def apply_manifest(service: Service | None, name: str, namespace: str, manifest: dict[str, Any]) -> Service:
    """The service after ArgoCD applied `manifest` and KServe reconciled it (a new revision if the
    template changed)."""
    if service is None:
        service = Service(name, namespace, manifest)
    elif service.manifest == manifest:
        return service
    generation = service.generation + 1
    digest = revision_digest(manifest)
    revisions = service.revisions
    latest = service.latest_created
    if latest is None or latest.digest != digest:
        number = (latest.number if latest else 0) + 1
        pred = manifest.get("spec", {}).get("predictor", {})
        revisions = (
            *revisions,
            Revision(
                name=f"{name}-predictor-{number:05d}",
                digest=digest,
                version=manifest_version(manifest) or "unknown",
                storage_uri=storage_uri(manifest),
                min_replicas=max(1, int(pred.get("minReplicas") or 1)),
                number=number,
                # Plain values only: a `valueFrom` (a Secret) has no stand-in, the process env keeps its own.
                env=tuple(
                    (str(e["name"]), str(e["value"]))
                    for e in (pred.get("model") or {}).get("env") or []
                    if isinstance(e, dict) and "name" in e and "value" in e
                ),
            ),
        )
    return replace(service, manifest=manifest, generation=generation, revisions=revisions)


def latest_ready(service: Service, ready: set[str]) -> Revision | None:
    """Knative's LatestReadyRevision: the newest revision that is ready."""
    for rev in reversed(service.revisions):
        if rev.name in ready:
            return rev
    return None


def route(service: Service, ready: set[str]) -> list[Target]:
    """The Knative route KServe asks for, with `latestRevision` resolved to the latest ready revision
    (empty while no revision is ready)."""
    current = latest_ready(service, ready)
    if current is None:
        return []
    percent = canary_percent(service.manifest)
    if percent is not None and service.latest_rolledout:
        targets = [Target(current.name, percent, True)]
        if percent < 100:
            targets.append(Target(service.latest_rolledout, 100 - percent, False, "prev"))
        return targets
    return [Target(current.name, 100, True)]


def propagate(service: Service, targets: list[Target], ready: set[str]) -> Service:
    """KServe's PropagateStatus: track the last fully rolled-out revision."""
    current = latest_ready(service, ready)
    created = service.latest_created
    if current is None:
        return service
    per_revision: dict[str, int] = {}
    for t in targets:
        per_revision[t.revision] = per_revision.get(t.revision, 0) + t.percent
    latest_rolledout, previous = service.latest_rolledout, service.previous_rolledout
    for t in targets:
        if t.revision != current.name or not t.latest:
            continue
        if latest_rolledout != current.name:
            if t.percent == 100:
                previous, latest_rolledout = latest_rolledout, current.name
        elif (
            created is not None
            and current.name == created.name
            and t.percent < 100
            and per_revision.get(t.revision) == 100
            and previous
        ):
            # the fully rolled-out revision was rolled back: the one before it is rolled out again
            latest_rolledout = previous
    return replace(service, latest_rolledout=latest_rolledout, previous_rolledout=previous)


@dataclass(frozen=True)
class Observed:
    """What the pods of each revision are doing (from pods.py)."""

    ready: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # revision -> why


def status_object(service: Service, targets: list[Target], observed: Observed) -> dict[str, Any]:
    """The InferenceService with a `status` as KServe writes it: what `sluice ci rollout` reads."""
    created = service.latest_created
    current = latest_ready(service, observed.ready)
    conditions = []
    failure = observed.failed.get(created.name) if created else None
    ready = created is not None and created.name in observed.ready
    if failure:
        conditions.append({"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": failure})
        conditions.append({"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": failure})
    else:
        state = "True" if ready else "Unknown"
        conditions.append({"type": "PredictorReady", "status": state})
        conditions.append({"type": "Ready", "status": "True" if current is not None else "Unknown"})
    meta = dict(service.manifest.get("metadata", {}))
    meta["generation"] = service.generation
    return {
        "apiVersion": service.manifest.get("apiVersion"),
        "kind": "InferenceService",
        "metadata": meta,
        "spec": service.manifest.get("spec"),
        "status": {
            "observedGeneration": service.generation,
            "conditions": conditions,
            "components": {
                "predictor": {
                    "latestCreatedRevision": created.name if created else None,
                    "latestReadyRevision": current.name if current else None,
                    "latestRolledoutRevision": service.latest_rolledout,
                    "previousRolledoutRevision": service.previous_rolledout,
                    "traffic": [
                        {
                            "revisionName": t.revision,
                            "percent": t.percent,
                            "latestRevision": t.latest,
                            **({"tag": t.tag} if t.tag else {}),
                        }
                        for t in targets
                    ],
                }
            },
        },
    }
