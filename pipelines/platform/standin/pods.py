"""The stand-in's pods: runtime processes (`python -m serving`, the container's command) per revision.

Like a Knative revision's pods: the storage initializer's code (kserve_storage) downloads the
`storageUri` once per URI into a cache, then `min_replicas` processes start (capped by
SLUICE_STANDIN_MAX_REPLICAS, default 2, to fit a laptop), each on its own ports with `K_REVISION`
set, and a pod is ready when its model answers `/v2/models/<name>/ready`. A pod that exits is
restarted (a counter reset, as after a container restart); a revision whose pods keep failing to
start is failed, with the reason (KServe's RevisionFailed). `detach()` is `kubectl delete pod`: the
pod leaves its revision (a new one replaces it at the next reconcile) and drains.

A pod that leaves (deleted, or its revision scaled to zero) drains as Knative's queue-proxy does: it
keeps answering for DRAIN_SECONDS after the route stopped naming it, then stops gracefully. A request
that picked the route just before it changed still finds the pod up, instead of a connection the
stopping server closes under it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipelines.platform.standin.knative import Revision

START_ATTEMPTS = 3
READY_TIMEOUT = 180.0
STOP_GRACE = 10.0
# Knative drains for 30 s (queue-proxy's drain sleep) because endpoints reach every node late; here the
# route is replaced in-process, so a request picked before the change is sent within milliseconds.
DRAIN_SECONDS = 2.0
Say = Callable[[str], None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _download(uri: str, dest: Path, aws_env: dict[str, str]) -> None:
    from serving.source import download

    download(uri, dest, aws_env)


def download_in_child(uri: str, dest: Path, aws_env: dict[str, str]) -> None:
    """kserve_storage downloads with a fork()-based pool; forked from a process with threads its
    workers can deadlock on locks other threads held, so the download runs in a spawned child."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(_download, uri, dest, aws_env).result()


@dataclass
class Pod:
    name: str
    revision: Revision
    model: str
    http_port: int
    grpc_port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    was_ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class RevisionPods:
    revision: Revision
    model: str
    model_dir: Path | None = None
    downloading: bool = False
    failed: str | None = None
    attempts: int = 0
    pods: list[Pod] = field(default_factory=list)
    # Knative keeps a revision Ready once its minimum of pods was ready: a pod that restarts does
    # not take the revision out of the route (its other pods keep answering).
    was_ready: bool = False


class Pods:
    """Pods of every revision the controller wants running; thread-safe."""

    def __init__(self, cache: Path, logs: Path, aws_env: dict[str, str], max_replicas: int, say: Say):
        self.cache, self.logs, self.aws_env, self.max_replicas, self.say = cache, logs, aws_env, max_replicas, say
        self._revs: dict[str, RevisionPods] = {}
        self._lock = threading.RLock()
        self._downloads = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="download")
        self._names = itertools.count(1)
        self._draining: dict[str, tuple[threading.Timer, Pod]] = {}  # by pod name

    # --- desired state ----------------------------------------------------------------------------

    def want(self, model: str, revisions: list[Revision]) -> None:
        """Keep pods for exactly these revisions of `model` (others scale to zero)."""
        names = {r.name for r in revisions}
        with self._lock:
            for name in [n for n, rp in self._revs.items() if rp.model == model and n not in names]:
                self._stop_revision(self._revs.pop(name))
            for rev in revisions:
                if rev.name not in self._revs:
                    self._revs[rev.name] = RevisionPods(rev, model)
                    self.say(f"{rev.name}: scheduling v{rev.version} ({rev.storage_uri})")

    def forget(self, model: str) -> None:
        self.want(model, [])

    # --- observation ---------------------------------------------------------------------------

    def ready(self) -> set[str]:
        with self._lock:
            return {n for n, rp in self._revs.items() if self._is_ready(rp)}

    def failed(self) -> dict[str, str]:
        with self._lock:
            return {n: rp.failed for n, rp in self._revs.items() if rp.failed}

    def endpoints(self, revision: str) -> list[str]:
        with self._lock:
            rp = self._revs.get(revision)
            return [p.url for p in rp.pods if p.ready] if rp else []

    def scrape_targets(self, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "targets": [f"127.0.0.1:{p.http_port}"],
                    "labels": {"revision": rp.revision.name, "pod": p.name, "namespace": namespace},
                }
                for rp in self._revs.values()
                for p in rp.pods
                if p.proc.poll() is None
            ]

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "revision": n,
                    "version": rp.revision.version,
                    "ready": self._is_ready(rp),
                    "failed": rp.failed,
                    "downloading": rp.downloading,
                    "pods": [
                        {"name": p.name, "url": p.url, "grpc_port": p.grpc_port, "ready": p.ready, "pid": p.proc.pid}
                        for p in rp.pods
                    ],
                }
                for n, rp in sorted(self._revs.items())
            ]

    def _is_ready(self, rp: RevisionPods) -> bool:
        replicas = min(rp.revision.min_replicas, self.max_replicas)
        if rp.failed is None and sum(p.ready for p in rp.pods) >= replicas:
            rp.was_ready = True
        return rp.failed is None and rp.was_ready

    # --- the loop ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Start, probe and restart pods; called by the controller every few hundred ms."""
        with self._lock:
            for rp in list(self._revs.values()):
                if rp.failed:
                    continue
                if rp.model_dir is None:
                    if not rp.downloading:
                        rp.downloading = True
                        self._downloads.submit(self._fetch, rp)
                    continue
                self._probe(rp)
                replicas = min(rp.revision.min_replicas, self.max_replicas)
                while len(rp.pods) < replicas and rp.failed is None:
                    rp.pods.append(self._start_pod(rp))

    def detach(self, pod_name: str) -> Pod | None:
        """`kubectl delete pod`: the pod leaves its revision (its endpoint with it) and drains; the
        next reconcile starts a replacement. The caller republishes the route without it."""
        with self._lock:
            for rp in self._revs.values():
                for p in rp.pods:
                    if p.name == pod_name:
                        rp.pods.remove(p)
                        self._drain(p)
                        self.say(f"{rp.revision.name}: pod {pod_name} deleted; it drains and a new one replaces it")
                        return p
        return None

    def stop_all(self) -> None:
        with self._lock:
            for rp in self._revs.values():
                for p in rp.pods:
                    self._stop_pod(p)
                rp.pods.clear()
            self._revs.clear()
            for timer, p in self._draining.values():
                timer.cancel()
                self._stop_pod(p)
            self._draining.clear()
        self._downloads.shutdown(wait=False, cancel_futures=True)

    # --- internals -----------------------------------------------------------------------------

    def _fetch(self, rp: RevisionPods) -> None:
        uri = rp.revision.storage_uri
        dest = self.cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
        try:
            if not (dest / "MLmodel").is_file():
                started = time.monotonic()
                self.say(f"{rp.revision.name}: downloading {uri}")
                download_in_child(uri, dest, self.aws_env)
                self.say(f"{rp.revision.name}: downloaded in {time.monotonic() - started:.1f}s")
            with self._lock:
                rp.model_dir = dest
        except Exception as exc:  # the storage initializer failed: the revision cannot start
            with self._lock:
                rp.failed = f"storage initializer: cannot download {uri}: {exc}"
            self.say(f"{rp.revision.name}: FAILED: {rp.failed}")
        finally:
            with self._lock:
                rp.downloading = False

    def _start_pod(self, rp: RevisionPods) -> Pod:
        assert rp.model_dir is not None
        name = f"{rp.revision.name}-deployment-{next(self._names):04d}"
        http_port, grpc_port = free_port(), free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        env = {
            **os.environ,
            **dict(rp.revision.env),
            "K_REVISION": rp.revision.name,
            "K_SERVICE": rp.revision.name,
            "K_CONFIGURATION": rp.revision.name.rsplit("-", 1)[0],
            "SLUICE_MODEL_VERSION": rp.revision.version,
            "OMP_NUM_THREADS": "1",
        }
        cmd = [
            sys.executable, "-m", "serving",
            "--model-dir", str(rp.model_dir),
            "--model-name", rp.model,
            "--model-version", rp.revision.version,
            "--host", "127.0.0.1",
            "--http-port", str(http_port),
            "--grpc-port", str(grpc_port),
        ]  # fmt: skip
        # Same process group as the stand-in: `sluice down` stopping the stand-in's group stops its pods.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.say(f"{rp.revision.name}: pod {name} starting on :{http_port} (pid {proc.pid})")
        return Pod(name, rp.revision, rp.model, http_port, grpc_port, proc, log)

    def _probe(self, rp: RevisionPods) -> None:
        for p in list(rp.pods):
            if p.proc.poll() is not None:
                rp.pods.remove(p)
                p.log.close()
                if p.was_ready:
                    self.say(f"{rp.revision.name}: pod {p.name} exited ({p.proc.returncode}); restarting it")
                    continue
                rp.attempts += 1
                if rp.attempts >= START_ATTEMPTS:
                    log = self.logs / f"{p.name}.log"
                    rp.failed = (
                        f"its pods exited during startup {rp.attempts} times (exit {p.proc.returncode}; see {log})"
                    )
                    self.say(f"{rp.revision.name}: FAILED: {rp.failed}")
                continue
            if not p.ready:
                p.ready = _answers(f"{p.url}/v2/models/{p.model}/ready")
                if p.ready:
                    p.was_ready = True
                    self.say(f"{rp.revision.name}: pod {p.name} ready after {time.monotonic() - p.started:.1f}s")
                elif time.monotonic() - p.started > READY_TIMEOUT:
                    self.say(f"{rp.revision.name}: pod {p.name} not ready after {READY_TIMEOUT:.0f}s; replacing it")
                    rp.pods.remove(p)
                    self._stop_pod(p)
                    rp.attempts += 1

    def _stop_revision(self, rp: RevisionPods) -> None:
        for p in rp.pods:
            self._drain(p)
        if rp.pods:
            self.say(f"{rp.revision.name}: scaled to zero")
        rp.pods.clear()

    def _drain(self, p: Pod) -> None:
        """Stop `p` after DRAIN_SECONDS; it is already out of the route (or about to be republished so)."""
        timer = threading.Timer(DRAIN_SECONDS, self._drained_stop, args=(p.name,))
        timer.daemon = True
        self._draining[p.name] = (timer, p)
        timer.start()

    def _drained_stop(self, name: str) -> None:
        with self._lock:
            draining = self._draining.pop(name, None)
        if draining is not None:
            self._stop_pod(draining[1])

    def _stop_pod(self, p: Pod) -> None:
        if p.proc.poll() is None:
            p.proc.terminate()
            try:
                p.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        p.log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False
