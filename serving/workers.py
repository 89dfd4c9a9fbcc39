"""`python -m serving --workers N`: N runtime processes on one HTTP port, for pods with N cores.

One runtime process serves from one event loop, so it uses about one core. This supervisor starts N
ordinary runtime processes (the same command, one worker each); each listens on the HTTP and gRPC
ports with SO_REUSEPORT, and the kernel spreads new connections over them. (One shared listening
socket was measured first: the first worker to wake accepted every connection of a burst, and two
workers served no more than one; docs/benchmarks.md.)

- Metrics: the workers run in prometheus_client's multiprocess mode (serving.metrics) in a fresh
  directory this supervisor owns, so every `/metrics` answer is the pod's total.
- Faults: a worker that dies is logged and started again; the counters it wrote stay in the sum.
  A worker that dies within `START_WINDOW` seconds of its start (a model that does not load, a
  port in use) stops them all and the supervisor exits 1, as a single runtime would.
- SIGTERM/SIGINT: passed to every worker, which finishes its in-flight requests (the runtime's
  grace period), then the directory is removed and the supervisor exits 0 (1 if a worker failed).
  Killed outright, the supervisor takes the workers with it (parent-death signal).

KServe's own `--workers` (RESTServerMultiProcess) pickles the model server into spawned processes
and keeps metrics per process; this keeps the single-process runtime as the unit instead. The
supervisor imports neither KServe nor the model: it stays a few MB.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("serving.workers")

REUSE_PORT_ENV = "SLUICE_REUSE_PORT"  # set for a worker: listen with SO_REUSEPORT beside the others
WORKERS_ENV = "SLUICE_WORKERS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch (serving.metrics reads it)
START_WINDOW = 30.0  # seconds: a worker dying this soon after its start is a fault, not a crash to retry
START_WINDOW_ENV = "SLUICE_WORKER_START_WINDOW"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_TIMEOUT = 60.0  # seconds for workers to drain after SIGTERM; above serving.server.GRACE_PERIOD


def is_worker() -> bool:
    return os.environ.get(REUSE_PORT_ENV) == "1"


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT (not yet listening: one that listens gets connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it a response written in two parts waits for the client's delayed ACK (44 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def worker_socket(host: str, port: int) -> socket.socket:
    """This worker's listening HTTP socket, one of the SO_REUSEPORT group on the port."""
    sock = reuse_port_socket(host, port)
    sock.listen(2048)
    return sock


def supervise(argv: Sequence[str], workers: int, host: str, http_port: int, start_window: float = START_WINDOW) -> int:
    """Run `python -m serving <argv>` `workers` times on one port until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        # Held, never listening: the port stays ours while workers restart, and a taken port fails here.
        reserved = reuse_port_socket(host, http_port)
    except OSError as exc:
        log.error("%s; is another server running there?", exc)
        return 1
    metrics_dir = Path(tempfile.mkdtemp(prefix="sluice-metrics-"))
    env = {**os.environ, REUSE_PORT_ENV: "1", MULTIPROC_ENV: str(metrics_dir), WORKERS_ENV: "1"}
    command = [sys.executable, "-m", "serving", *argv]
    stopping: list[int] = []
    started: dict[int, float] = {}

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
        started[proc.pid] = time.monotonic()
        log.info("started worker %d", proc.pid)
        return proc

    def on_signal(sig: int, _frame: object) -> None:
        stopping.append(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("%d workers on %s:%d (metrics summed from %s)", workers, host, http_port, metrics_dir)
    procs = [start() for _ in range(workers)]
    failed = False
    try:
        while not stopping and not failed:
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is None or stopping:
                    continue
                if time.monotonic() - started[proc.pid] < start_window:
                    log.error(
                        "worker %d exited with %s right after starting (its log is above); stopping", proc.pid, code
                    )
                    failed = True
                    break
                log.error("worker %d exited with %s; starting another", proc.pid, code)
                procs[i] = start()
            time.sleep(0.2)
        if stopping:
            log.info("signal %d: stopping %d workers", stopping[0], len(procs))
        failed = _stop(procs) or failed
    finally:
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if failed else 0


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux prctl).

    In a pod the container's end takes every process with it; elsewhere (the local stand-in, tests,
    a shell) an orphaned worker would keep serving on the port.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(procs: list[subprocess.Popen[bytes]]) -> bool:
    """SIGTERM every worker still running and wait; True if one exited with an error or had to be killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    failed = False
    for proc in procs:
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d still running %.0fs after SIGTERM; killing it", proc.pid, STOP_TIMEOUT)
            proc.kill()
            code = proc.wait()
            failed = True
        failed = failed or code not in (0, -signal.SIGTERM)
    return failed
