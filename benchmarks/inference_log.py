"""Throughput of the inference-log receiver: KServe payload-logger events per second, into S3.

Starts LocalStack S3 only (free port, temp state dir), then per round a fresh receiver process
(`python -m serving.inference_log`, 1 s flush interval so Parquet is written and uploaded during the
run) and sends it --pairs request/response pairs of the Rossmann model (5-row V2 requests, FP32
predictions), built beforehand as KServe's agent builds them (binary-mode CloudEvents) and POSTed by
--clients concurrent keep-alive connections (KServe's agent sends from a pool of workers).

Measured per round:
  events/s       acknowledged events per second (the receiver answered 200: in its write-ahead log)
  ack p50/p99    latency of one POST as the sender sees it
  to S3          from the last acknowledgement until every row is in S3 (the last flush + upload)
  peak RSS       of the receiver process

Two variants side by side, alternating order each round: `default` (the WAL is fsync'd at most
once a second, SLUICE_INFERENCE_LOG_FSYNC=0) and `fsync` (fsync before every acknowledgement).
The load generator shares the 2 cores with the receiver, so these are lower bounds.

    uv run python benchmarks/inference_log.py [--rounds 3] [--pairs 3000] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from inference_log_helpers import event, request_body, response_body, rows  # noqa: E402

from pipelines.config import Settings, load_settings  # noqa: E402
from pipelines.platform import localstack  # noqa: E402
from pipelines.platform.processes import stop_service  # noqa: E402
from pipelines.registry import s3_client  # noqa: E402

VARIANTS = {"default": {"SLUICE_INFERENCE_LOG_FSYNC": "0"}, "fsync": {"SLUICE_INFERENCE_LOG_FSYNC": "1"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_only(tmp: Path) -> Iterator[Settings]:
    """LocalStack S3 with the data bucket; nothing else of the platform."""
    shared = load_settings()
    own = load_settings({**os.environ, "SLUICE_STATE_DIR": str(tmp / "state"), "SLUICE_S3_PORT": str(_free_port())})
    localstack.ensure_localstack_venv(shared)
    link = localstack.localstack_venv(own)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(localstack.localstack_venv(shared), target_is_directory=True)
    own.logs_dir.mkdir(parents=True, exist_ok=True)
    try:
        localstack.start_localstack(own, echo=lambda *a: None)
        s3_client(own).create_bucket(Bucket=own.data_bucket)
        yield own
    finally:
        stop_service(own, "localstack")


@dataclass
class Round:
    variant: str
    events_per_s: float
    p50_ms: float
    p99_ms: float
    to_s3_s: float
    peak_rss_mb: float


def build_events(pairs: int, model: str) -> list[tuple[dict[str, str], bytes]]:
    out = []
    for i in range(pairs):
        data = rows(5, seed=i)
        out.append(event("request", f"{model}-{i}", request_body(data, request_id=str(i)), model=model))
        out.append(event("response", f"{model}-{i}", response_body(data), model=model))
    return out


async def send_all(url: str, events: list[tuple[dict[str, str], bytes]], clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
    for e in events:
        queue.put_nowait(e)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            headers, body = queue.get_nowait()
            t = time.perf_counter()
            async with session.post(url, headers=headers, data=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{resp.status}: {await resp.text()}")
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def stored_rows(settings: Settings, model: str) -> int:
    import pyarrow.parquet as pq

    s3 = s3_client(settings)
    total = 0
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.data_bucket, Prefix=f"inference-log/model={model}/"
    )
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.data_bucket, Key=obj["Key"])["Body"].read()
            import pyarrow as pa

            total += pq.read_metadata(pa.BufferReader(body)).num_rows
    return total


def one_round(settings: Settings, variant: str, tmp: Path, pairs: int, clients: int, n: int) -> Round:
    port = _free_port()
    model = f"bench-{variant}-{n}"
    env = {
        **os.environ,
        **settings.aws_env(),
        "SLUICE_DATA_BUCKET": settings.data_bucket,
        "SLUICE_INFERENCE_LOG_PORT": str(port),
        "SLUICE_INFERENCE_LOG_SPOOL_DIR": str(tmp / f"spool-{variant}-{n}"),
        "SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "1",
        **VARIANTS[variant],
    }
    log = (tmp / f"receiver-{variant}-{n}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.inference_log"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"receiver did not start; see {log.name}")
            time.sleep(0.1)
        events = build_events(pairs, model)
        asyncio.run(send_all(f"{url}/", build_events(50, model + "-warm"), clients))  # connections, first flush
        peak = [0.0]
        ps = psutil.Process(proc.pid)

        async def sample_rss(stop: asyncio.Event) -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], ps.memory_info().rss / 1e6)
                await asyncio.sleep(0.05)

        async def run() -> tuple[float, list[float]]:
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(stop))
            result = await send_all(f"{url}/", events, clients)
            stop.set()
            await sampler
            return result

        elapsed, latencies = asyncio.run(run())
        acked = time.perf_counter()
        while stored_rows(settings, model) < pairs * 5:
            if time.perf_counter() - acked > 120:
                raise RuntimeError("rows did not reach S3 within 120 s")
            time.sleep(0.2)
        to_s3 = time.perf_counter() - acked
        q = statistics.quantiles(latencies, n=100)
        return Round(variant, len(events) / elapsed, q[49] * 1000, q[98] * 1000, to_s3, peak[0])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}", flush=True)
    results: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-log-") as tmp, s3_only(Path(tmp)) as settings:
        for n in range(args.rounds):
            order = list(VARIANTS) if n % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                r = one_round(settings, variant, Path(tmp), args.pairs, args.clients, n)
                results.append(r)
                print(
                    f"round {n + 1} {variant:8s} {r.events_per_s:7.0f} events/s  ack p50 {r.p50_ms:5.1f} ms"
                    f"  p99 {r.p99_ms:6.1f} ms  to S3 {r.to_s3_s:4.1f} s  peak RSS {r.peak_rss_mb:4.0f} MB",
                    flush=True,
                )
    print(f"\n{args.pairs} pairs (5 rows each) x {args.rounds} rounds, {args.clients} clients; median [min-max]")
    medians = {}
    for variant in VARIANTS:
        rs = [r for r in results if r.variant == variant]
        eps = [r.events_per_s for r in rs]
        medians[variant] = statistics.median(eps)
        print(
            f"  {variant:8s} {statistics.median(eps):7.0f} events/s [{min(eps):.0f}-{max(eps):.0f}]"
            f"  ack p50 {statistics.median(r.p50_ms for r in rs):5.1f} ms"
            f"  p99 {statistics.median(r.p99_ms for r in rs):6.1f} ms"
            f"  to S3 {statistics.median(r.to_s3_s for r in rs):4.1f} s"
            f"  peak RSS {max(r.peak_rss_mb for r in rs):4.0f} MB"
        )
    ratios = [
        a.events_per_s / b.events_per_s
        for a, b in zip(
            [r for r in results if r.variant == "fsync"], [r for r in results if r.variant == "default"], strict=True
        )
    ]
    print(f"  fsync/default throughput ratio per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"  load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
