"""`python -m serving --workers 2`: two runtime processes on one port, metrics summed, faults handled.

Real processes on 127.0.0.1, started with the image's command plus `--workers 2` (serving.workers).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving.metrics import ArraySeries, ServingMetrics
from serving.server import GRACE_PERIOD
from serving.workers import STOP_TIMEOUT

pytest.register_assert_rewrite("serving_helpers")
from serving_helpers import (  # noqa: E402
    JSON,
    MODEL,
    VERSION,
    Server,
    container_command,
    free_port,
    grpc_request,
    grpc_stub,
    infer_url,
    outcome_counts,
    run_server,
    scrape,
    v2_body,
)

pytest_plugins = ["serving_helpers"]

WORKERS = ["--workers", "2"]


def test_array_series_writes_what_a_histogram_would() -> None:
    """ArraySeries adds whole arrays through prometheus_client's own bucket values: same exposition."""
    values = np.array([0.0, 0.0, 999.0, 1000.0, 1000.5, 25_000.0, 99_999.0, np.nan, np.inf])
    buckets = (0, 1000, 2000, 30000)
    one, other = CollectorRegistry(), CollectorRegistry()
    a = Histogram("v", "d", ["m"], buckets=buckets, registry=one)
    b = Histogram("v", "d", ["m"], buckets=buckets, registry=other)
    ArraySeries(a.labels("x"), np.asarray(buckets, dtype=float)).observe(values)
    for v in values[np.isfinite(values)]:
        b.labels("x").observe(float(v))

    def lines(registry: CollectorRegistry) -> list[str]:
        return [ln for ln in generate_latest(registry).decode().splitlines() if "_created" not in ln]

    assert lines(one) == lines(other)
    assert 'v_bucket{le="1000.0",m="x"} 4.0' in lines(one)


def test_workers_drain_within_the_supervisors_wait() -> None:
    assert STOP_TIMEOUT > GRACE_PERIOD
    assert ServingMetrics().info._multiprocess_mode == "max"  # one info series per pod, not per worker


def _new_connection_infer(server: Server, rows: pd.DataFrame) -> httpx.Response:
    # A fresh connection per request, so the kernel spreads them over the workers' sockets.
    with httpx.Client(timeout=30) as client:
        return client.post(infer_url(server), json=v2_body(rows), headers=JSON)


@pytest.fixture(scope="module")
def workers(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("workers") / "server.log"
    with run_server(model_dir, log, env={"SLUICE_WORKER_START_WINDOW": "3"}, args=WORKERS) as server:
        yield server
        assert server.stop() == 0, server.logs()
    assert "stopping 2 workers" in log.read_text()


def _children(server: Server) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children()


def _wait_children(server: Server, n: int, timeout: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(server)
        if len(kids) == n:
            return kids
        time.sleep(0.2)
    raise AssertionError(f"expected {n} workers, have {len(_children(server))}:\n{server.logs()}")


def _wait_listening(server: Server, timeout: float = 90) -> list[psutil.Process]:
    """Both workers listen on the HTTP port (each loads the model first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(server)
        listening = [
            k
            for k in kids
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == server.http_port for c in k.connections(kind="tcp")
            )
        ]
        if len(kids) == 2 and len(listening) == 2:
            return kids
        time.sleep(0.3)
    raise AssertionError(f"two workers not listening on {server.http_port}:\n{server.logs()}")


def _metrics_dir(server: Server) -> Path:
    line = next(ln for ln in server.logs().splitlines() if "metrics summed from" in ln)
    return Path(line.rsplit("metrics summed from ", 1)[1].rstrip(")"))


def _ok_per_worker(server: Server) -> dict[int, float]:
    """Each worker's own count of answered requests, read from its multiprocess file."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in _metrics_dir(server).glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if '"sluice_inference_requests_total"' in key and '"ok"' in key:
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


@pytest.mark.integration
def test_two_workers_answer_and_every_scrape_sums_both(
    workers: Server, sample_rows: pd.DataFrame, expected: np.ndarray
) -> None:
    kids = _wait_listening(workers)
    before = outcome_counts(scrape(workers))
    for _ in range(30):
        r = _new_connection_infer(workers, sample_rows)
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["outputs"][0]["data"], expected)
    bad = sample_rows.assign(Date="2015-13-45")
    r = _new_connection_infer(workers, bad)
    assert r.status_code == 400 and "Date" in r.json()["error"]
    # Each scrape lands on either worker; each must report the pod's total, not its own share.
    for _ in range(10):
        counts = outcome_counts(scrape(workers))
        assert counts["ok"] - before["ok"] == 30 and counts["invalid"] - before["invalid"] == 1, counts
    # Both workers answered some of them (so the scrapes above summed two processes' files).
    per_worker = _ok_per_worker(workers)
    assert set(per_worker) == {k.pid for k in kids} and all(v > 0 for v in per_worker.values()), per_worker
    # gRPC on the shared port too.
    reply = grpc_stub(workers).ModelInfer(grpc_request(v2_body(sample_rows)), timeout=30)
    assert reply.model_name == MODEL and reply.model_version == VERSION


@pytest.mark.integration
def test_a_dead_worker_is_replaced_and_its_counts_are_kept(workers: Server, sample_rows: pd.DataFrame) -> None:
    kids = _wait_children(workers, 2)
    for _ in range(5):
        assert _new_connection_infer(workers, sample_rows).status_code == 200
    before = outcome_counts(scrape(workers))["ok"]
    victim = kids[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = [k.pid for k in _children(workers)]
        if len(now) == 2 and victim.pid not in now:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the killed worker was not replaced:\n{workers.logs()}")
    _wait_listening(workers)
    for _ in range(10):
        assert _new_connection_infer(workers, sample_rows).status_code == 200
    assert outcome_counts(scrape(workers))["ok"] == before + 10  # the dead worker's counts stay in the sum
    assert f"worker {victim.pid} exited with -9; starting another" in workers.logs()


@pytest.mark.integration
def test_workers_fail_fast_on_a_model_that_does_not_load(tmp_path: Path) -> None:
    http, grpc_port = free_port(), free_port()
    cmd = [*container_command(tmp_path / "missing", http, grpc_port), *WORKERS]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "right after starting" in out.stderr
    line = next(ln for ln in out.stderr.splitlines() if "metrics summed from" in ln)
    assert not Path(line.rsplit("metrics summed from ", 1)[1].rstrip(")")).exists()  # cleaned up


@pytest.mark.integration
def test_workers_refuse_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cmd = [*container_command(tmp_path, port, free_port()), "--host", "127.0.0.1", *WORKERS]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_workers_flag_is_checked() -> None:
    out = subprocess.run([sys.executable, "-m", "serving", "--workers", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "--workers must be at least 1" in out.stderr


@pytest.mark.integration
def test_workers_do_not_outlive_a_killed_supervisor(model_dir: Path, tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to stop its workers; the kernel's parent-death signal does."""
    http, grpc_port = free_port(), free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*container_command(model_dir, http, grpc_port), *WORKERS], stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(proc, http, grpc_port, log)
    kids: list[psutil.Process] = []
    try:
        kids = _wait_listening(server)
        proc.kill()
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(kids, timeout=30)
        assert not alive, f"workers still running after the supervisor was killed: {alive}\n{server.logs()}"
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", http))  # nothing listens on the port any more
    finally:
        for k in [*kids, *([psutil.Process(proc.pid)] if proc.poll() is None else [])]:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.kill()
