"""The stand-in's controller: follow the GitOps remote (ArgoCD's job), turn each InferenceService into
revisions and a route (KServe + Knative's job, knative.py), keep their pods running (pods.py), and
publish the route for the router and the InferenceService status for `sluice ci rollout`.

State that a cluster would keep in etcd (revisions, the rolled-out revision) is persisted in
`<state_dir>/standin/state.json`, so a restart of the stand-in keeps its revision history.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.manifest import NAMESPACE, logger_url, mirror_percent, parse_manifest_text
from pipelines.gitops.state import MODELS_DIR, ModelPaths, Revision, models
from pipelines.platform import prometheus
from pipelines.platform.standin import knative
from pipelines.platform.standin.pods import Pods, Say


@dataclass(frozen=True)
class RouteTarget:
    revision: str
    version: str
    percent: int
    endpoints: tuple[str, ...]
    role: str = ""  # "canary" (KServe's latestRevision while a rolled-out one keeps the rest), "stable", ""


@dataclass(frozen=True)
class Route:
    model: str
    commit: str
    targets: tuple[RouteTarget, ...]
    mirror_percent: int = 0  # share of the stable's requests also sent to the canary (sluice.dev/mirror-percent)
    log_url: str | None = None  # where the payload logger posts (the local receiver), None: not logged

    def target(self, role: str) -> RouteTarget | None:
        return next((t for t in self.targets if t.role == role), None)


@dataclass
class Published:
    """What the router reads; replaced as a whole, never mutated (one assignment is atomic)."""

    routes: dict[str, Route] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)


def without_endpoint(published: Published, url: str) -> Published:
    """The published state with one pod's endpoint gone from every route (an Endpoints update)."""
    routes = {
        name: replace(
            route,
            targets=tuple(replace(t, endpoints=tuple(e for e in t.endpoints if e != url)) for t in route.targets),
        )
        for name, route in published.routes.items()
    }
    return Published(routes, published.objects)


def _service_to_json(s: knative.Service) -> dict[str, Any]:
    data = asdict(s)
    data["revisions"] = [asdict(r) for r in s.revisions]
    return data


def _service_from_json(d: dict[str, Any]) -> knative.Service:
    revs = tuple(knative.Revision(**r) for r in d.get("revisions", []))
    return knative.Service(
        name=d["name"],
        namespace=d.get("namespace", NAMESPACE),
        manifest=d["manifest"],
        generation=int(d.get("generation", 0)),
        revisions=revs,
        latest_rolledout=d.get("latest_rolledout"),
        previous_rolledout=d.get("previous_rolledout"),
    )


class Controller:
    def __init__(self, settings: Settings, pods: Pods, say: Say):
        self.settings, self.pods, self.say = settings, pods, say
        self.home = settings.state_dir / "standin"
        self.home.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, knative.Service] = {}
        self.commit: str | None = None
        self.applied_at: str | None = None
        self.error: str | None = None
        self.published = Published()
        self._lock = threading.Lock()
        self._load()

    # --- persistence -------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    def _load(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        self.services = {n: _service_from_json(d) for n, d in data.get("services", {}).items()}
        self.commit = data.get("commit")

    def _save(self) -> None:
        data = {"commit": self.commit, "services": {n: _service_to_json(s) for n, s in self.services.items()}}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    # --- following Git (ArgoCD) -------------------------------------------------------------------

    def repository(self) -> Path:
        """The remote itself when it is a local bare repository, else a mirror fetched from it."""
        local = self.settings.gitops_remote_path
        if local is not None:
            return local
        mirror = self.home / "mirror.git"
        if not (mirror / "HEAD").is_file():
            git.git(self.home, "clone", "--quiet", "--mirror", self.settings.gitops_url, str(mirror))
        else:
            git.git(mirror, "fetch", "--quiet", "--prune", "origin")
        return mirror

    def sync(self) -> bool:
        """Apply what the branch declares now; True if anything changed."""
        repo = self.repository()
        sha = git.resolve(repo, self.settings.gitops_branch)
        if sha is None or sha == self.commit:
            return False
        source = Revision(repo, sha)
        declared: dict[str, dict[str, Any]] = {}
        for name in models(source):
            text = source.read(ModelPaths(name).manifest)
            if text is not None:
                declared[name] = parse_manifest_text(text, f"{ModelPaths(name).manifest}@{sha[:10]}")
        with self._lock:
            changed = False
            for name, doc in declared.items():
                before = self.services.get(name)
                after = knative.apply_manifest(before, name, NAMESPACE, doc)
                if after is not before:
                    changed = True
                    self.services[name] = after
                    if before is None or before.latest_created != after.latest_created:
                        self.say(
                            f"{name}: revision {after.latest_created.name if after.latest_created else '?'} created"
                        )
            for name in set(self.services) - set(declared):
                del self.services[name]
                self.pods.forget(name)
                changed = True
                self.say(f"{name}: no manifest under {MODELS_DIR}/ any more: pruned")
            self.commit = sha
            self.applied_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._save()
        self.say(f"applied {sha[:10]}: {self.summary()}")
        return changed

    # --- reconciling (KServe + Knative) ---------------------------------------------------------

    def reconcile(self) -> None:
        self.pods.reconcile()
        ready, failed = self.pods.ready(), self.pods.failed()
        routes: dict[str, Route] = {}
        objects: dict[str, dict[str, Any]] = {}
        wanted: dict[str, list[knative.Revision]] = {}
        with self._lock:
            for name, svc in list(self.services.items()):
                targets = knative.route(svc, ready)
                updated = knative.propagate(svc, targets, ready)
                if updated != svc:
                    self.services[name] = svc = updated
                    self._save()
                    self.say(f"{name}: latestRolledoutRevision {svc.latest_rolledout}")
                keep = {t.revision for t in targets if t.percent > 0}
                if svc.latest_created is not None:
                    keep.add(svc.latest_created.name)
                if not targets and svc.latest_rolledout:
                    keep.add(svc.latest_rolledout)
                wanted[name] = [r for r in svc.revisions if r.name in keep]
                split = len(targets) > 1
                routes[name] = Route(
                    name,
                    self.commit or "",
                    tuple(
                        RouteTarget(
                            t.revision,
                            (svc.revision(t.revision) or svc.revisions[-1]).version,
                            t.percent,
                            tuple(self.pods.endpoints(t.revision)),
                            ("canary" if t.latest else "stable") if split else "",
                        )
                        for t in targets
                    ),
                    mirror_percent(svc.manifest),
                    self.settings.inference_log_url if logger_url(svc.manifest) else None,
                )
                objects[name] = knative.status_object(svc, targets, knative.Observed(ready, failed))
            # The new route first, then the pods it no longer needs: traffic moves before they drain
            # and stop, as with Knative. Published under the lock so that a route computed before
            # delete_pod never replaces the one it published without the deleted pod.
            self.published = Published(routes, objects)
        for name, revisions in wanted.items():
            self.pods.want(name, revisions)
        prometheus.write_targets(self.settings, "standin", self.pods.scrape_targets(NAMESPACE))

    def delete_pod(self, name: str) -> bool:
        """`kubectl delete pod`: the route stops naming the pod now, then it drains and stops."""
        with self._lock:
            pod = self.pods.detach(name)
            if pod is None:
                return False
            self.published = without_endpoint(self.published, pod.url)
        return True

    def summary(self) -> str:
        if not self.services:
            return f"nothing declared under {MODELS_DIR}/"
        parts = []
        for name, svc in sorted(self.services.items()):
            rev = svc.latest_created
            parts.append(
                f"{name}: {rev.name if rev else '-'} (v{rev.version if rev else '?'}), generation {svc.generation}"
            )
        return "; ".join(parts)

    def status(self) -> dict[str, Any]:
        pub = self.published
        return {
            "remote": self.settings.gitops_url,
            "branch": self.settings.gitops_branch,
            "commit": self.commit,
            "applied_at": self.applied_at,
            "error": self.error,
            "services": {
                name: {
                    "traffic": [asdict(t) for t in route.targets],
                    "status": pub.objects.get(name, {}).get("status"),
                }
                for name, route in sorted(pub.routes.items())
            },
            "pods": self.pods.describe(),
        }

    def follow(self, stop: threading.Event, interval: float) -> None:
        """Sync and reconcile until `stop`; an error is reported once and retried (the old state serves)."""
        last_sync = 0.0
        import time

        while not stop.is_set():
            now = time.monotonic()
            if now - last_sync >= interval:
                last_sync = now
                try:
                    self.sync()
                    self.error = None
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    if message != self.error:
                        self.say(
                            f"cannot apply the remote ({message}); still serving {self.commit and self.commit[:10]}"
                        )
                    self.error = message
            try:
                self.reconcile()
            except Exception as exc:  # never let the loop die: the router keeps the last routes
                self.say(f"reconcile failed: {type(exc).__name__}: {exc}")
            stop.wait(0.3)
