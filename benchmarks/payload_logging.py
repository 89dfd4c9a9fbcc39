"""Latency a client of the runtime sees with payload logging on versus off, same run.

Starts LocalStack S3 (free port, temp state dir), one runtime process (`python -m serving`) with a
quick Rossmann model trained for the run (as benchmarks/serving.py does), one inference-log receiver
(`python -m serving.inference_log`, 10 s flush as `sluice up` starts it) writing to the S3, and one
stand-in router process per variant (`build_app` of pipelines/platform/standin/router.py under
uvicorn, as `python -m pipelines.platform.standin` runs it). Each router has a real `Controller`
whose `published` is the benchmark's fixed route: model `rossmann`, one revision, 100% to the one
runtime; git-following and pod management are not started (they are not what is measured). The
variants differ only in the route's `log_url`:

  off    log_url None: no payload logging
  on     log_url = the receiver: request and response posted as CloudEvents after answering
  down   log_url = a port nobody listens on (a receiver that is down), with --down

All routers proxy to the same runtime process. Load: Rossmann V2 REST requests (pandas content
type) of --rows rows each, from --clients concurrent keep-alive clients (httpx, closed loop:
each client sends its next request when the answer arrives), --requests timed requests per cell
after --warmup untimed ones. For each round and each (rows, clients) cell the variants run back to
back, the order rotating between rounds, so `on` and `off` are measured minutes apart at most.

Reported per variant and cell: client-side p50/p95/p99 latency and requests/s, median [min-max]
over the rounds, and the on/off ratios per round with their median. With logging on, each cell
waits until the router's `sluice_payload_events{code="200"}` counts two acknowledged events per
request sent (request and response) and reports how long after the last answer that took; at the
end the receiver's `sluice_inference_log_events{outcome="accepted"}` and the rows in S3 are checked
against what was sent.

The load generator, the router, the runtime, the receiver and LocalStack share the machine's
cores: absolute figures are lower bounds; the on/off ratios, same run, are what to read.

    uv run python benchmarks/payload_logging.py [--rounds 3] [--requests 600] [--down]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.inference_log import s3_only, stored_rows  # noqa: E402
from benchmarks.serving import MODEL, free_port, make_model, request_body, sluice_server, started, stop_group, tail  # noqa: E402
from pipelines.config import Settings  # noqa: E402

# --- the router process (this file, run with --router) -------------------------------------------------


def serve_router(port: int, runtime: str, log_url: str | None) -> int:
    """One stand-in router: a real Controller whose published routes are fixed to the one runtime."""
    import uvicorn

    from pipelines.config import load_settings
    from pipelines.platform.standin.controller import Controller, Published, Route, RouteTarget
    from pipelines.platform.standin.pods import Pods
    from pipelines.platform.standin.router import build_app

    settings = load_settings()

    def say(text: str) -> None:
        print(f"[router] {text}", flush=True)

    pods = Pods(
        cache=settings.state_dir / "standin" / "models",
        logs=settings.logs_dir / "standin",
        aws_env={},
        max_replicas=1,
        say=say,
    )
    controller = Controller(settings, pods, say)  # not following git: the route below is fixed
    target = RouteTarget(revision=f"{MODEL}-predictor-00001", version="bench", percent=100, endpoints=(runtime,))
    controller.published = Published(routes={MODEL: Route(MODEL, "bench", (target,), log_url=log_url)})
    uvicorn.run(build_app(controller), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    return 0


# --- metrics ------------------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v for (n, lab), v in samples.items() if n == name and all(dict(lab).get(k) == x for k, x in labels.items())
    )


def payload_events(router: str, code: str) -> float:
    return metric_sum(scrape(router), "sluice_payload_events_total", code=code)


# --- load ---------------------------------------------------------------------------------------------


async def closed_loop(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Send every body once from `clients` keep-alive clients; (elapsed s, latencies s). Raises on non-200."""
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
                latencies.append(time.perf_counter() - t0)

        started_at = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started_at, latencies


@dataclass
class Cell:
    round: int
    variant: str
    rows: int
    clients: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    drain_s: float | None  # on: last answer -> every event of the cell acknowledged by the receiver


def bodies_for(rows: pd.DataFrame, n_rows: int, count: int, offset: int) -> list[bytes]:
    """`count` request bodies of `n_rows` rows each, cycling through the sample rows."""
    if not 0 < n_rows <= len(rows):
        raise SystemExit(f"--rows: 1 to {len(rows)} rows per request (the sample has {len(rows)})")
    out = []
    for i in range(count):
        start = ((offset + i) * n_rows) % (len(rows) - n_rows + 1)
        out.append(request_body(rows.iloc[start : start + n_rows]))
    return out


def run_cell(
    variant: str, router: str, rows: pd.DataFrame, n_rows: int, clients: int, args: argparse.Namespace, rnd: int
) -> tuple[Cell, int]:
    """One variant, one cell; (result, requests sent including the warm-up)."""
    url = f"{router}/v2/models/{MODEL}/infer"
    warm = bodies_for(rows, n_rows, args.warmup, rnd * 7919)
    timed = bodies_for(rows, n_rows, args.requests, rnd * 7919 + args.warmup)
    before = payload_events(router, "200") if variant == "on" else 0.0
    asyncio.run(closed_loop(url, warm, clients))
    elapsed, latencies = asyncio.run(closed_loop(url, timed, clients))
    answered = time.perf_counter()
    drain = None
    if variant == "on":
        want = before + 2 * (len(warm) + len(timed))
        while payload_events(router, "200") < want:
            if time.perf_counter() - answered > 120:
                raise RuntimeError(f"the receiver acknowledged {payload_events(router, '200') - before:.0f} of "
                                   f"{want - before:.0f} events within 120 s")  # fmt: skip
            time.sleep(0.05)
        drain = time.perf_counter() - answered
    lat = np.asarray(latencies) * 1000
    p50, p95, p99 = (float(np.percentile(lat, q)) for q in (50, 95, 99))
    return Cell(rnd, variant, n_rows, clients, len(latencies) / elapsed, p50, p95, p99, drain), len(warm) + len(timed)


# --- processes ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def process(name: str, cmd: list[str], env: dict[str, str], log: Path, ready_url: str) -> Iterator[None]:
    """A process in its own session, ready when `ready_url` answers 200; the whole group stopped after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 120 s:\n{tail(log)}")
            time.sleep(0.2)
        yield
    finally:
        stop_group(proc)


def receiver(settings: Settings, tmp: Path, port: int) -> contextlib.AbstractContextManager[None]:
    env = {
        **os.environ,
        **settings.aws_env(),
        "SLUICE_DATA_BUCKET": settings.data_bucket,
        "SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "10",  # as `sluice up` starts it
    }
    cmd = [sys.executable, "-m", "serving.inference_log", "--host", "127.0.0.1", "--port", str(port),
           "--spool-dir", str(tmp / "spool")]  # fmt: skip
    return process("receiver", cmd, env, tmp / "receiver.log", f"http://127.0.0.1:{port}/healthz")


def router(
    tmp: Path, variant: str, port: int, runtime: str, log_url: str | None
) -> contextlib.AbstractContextManager[None]:
    env = {**os.environ, "SLUICE_STATE_DIR": str(tmp / f"router-{variant}")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--router", "--port", str(port), "--runtime", runtime]
    if log_url:
        cmd += ["--log-url", log_url]
    url = f"http://127.0.0.1:{port}"
    return process(f"router {variant}", cmd, env, tmp / f"router-{variant}.log", f"{url}/v2/models/{MODEL}/ready")


# --- report -------------------------------------------------------------------------------------------


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def report(cells: list[Cell], variants: list[str], args: argparse.Namespace) -> str:
    lines = [
        "| rows | clients | variant | p50 ms | p95 ms | p99 ms | requests/s | on: events acked after last answer |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    ratio_lines = [
        "",
        "Against off, per round (rounds in order), median in brackets:",
        "",
        "| rows | clients | ratio | p50 | p95 | p99 | requests/s |",
        "|---:|---:|---|---|---|---|---|",
    ]
    for n_rows in args.rows:
        for clients in args.clients:
            by = {
                v: [c for c in cells if c.variant == v and c.rows == n_rows and c.clients == clients] for v in variants
            }
            for v in variants:
                cs = by[v]
                drains = [c.drain_s for c in cs if c.drain_s is not None]
                drain = spread(drains, ".2f") + " s" if drains else ""
                p50, p95, p99 = (spread([getattr(c, f"p{q}_ms") for c in cs]) for q in (50, 95, 99))
                rps = spread([c.rps for c in cs], ".0f")
                lines.append(f"| {n_rows} | {clients} | {v} | {p50} | {p95} | {p99} | {rps} | {drain} |")
            for v in variants[1:]:
                cols = []
                for attr in ("p50_ms", "p95_ms", "p99_ms", "rps"):
                    rs = [getattr(a, attr) / getattr(b, attr) for a, b in zip(by[v], by["off"], strict=True)]
                    cols.append(", ".join(f"{r:.2f}" for r in rs) + f" [{statistics.median(rs):.2f}]")
                ratio_lines.append(f"| {n_rows} | {clients} | {v}/off | " + " | ".join(cols) + " |")
    return "\n".join(lines + ratio_lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=600, help="timed requests per variant and cell")
    p.add_argument("--warmup", type=int, default=50, help="untimed requests before each cell")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 50], help="rows per request")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="concurrent clients")
    p.add_argument("--down", action="store_true", help="also a router whose receiver is down (dead port)")
    # Internal: this file runs itself as the router process.
    p.add_argument("--router", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    p.add_argument("--log-url", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.router:
        return serve_router(args.port, args.runtime, args.log_url)

    # SIGTERM unwinds like Ctrl-C, so every process started below is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}", flush=True)
    variants = ["off", "on"] + (["down"] if args.down else [])
    cells: list[Cell] = []
    sent_on = rows_on = 0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-bench-payload-")))
        settings = stack.enter_context(s3_only(tmp))
        model_dir, rows = make_model(tmp / "model")
        name, cmd, env, runtime = sluice_server(model_dir, tmp)
        stack.enter_context(started(name, cmd, env, runtime, tmp / "runtime.log", REPO_ROOT))
        log_port = free_port()
        stack.enter_context(receiver(settings, tmp, log_port))
        log_urls = {"off": None, "on": f"http://127.0.0.1:{log_port}/", "down": f"http://127.0.0.1:{free_port()}/"}
        routers = {}
        for v in variants:
            port = free_port()
            stack.enter_context(router(tmp, v, port, runtime, log_urls[v]))
            routers[v] = f"http://127.0.0.1:{port}"
        print(f"runtime {runtime}, receiver :{log_port}, routers {routers}", flush=True)
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
            for n_rows in args.rows:
                for clients in args.clients:
                    for v in order:
                        cell, sent = run_cell(v, routers[v], rows, n_rows, clients, args, rnd)
                        cells.append(cell)
                        if v == "on":
                            sent_on += sent
                            rows_on += sent * n_rows
                        drain = f"  acked {cell.drain_s:.2f} s after" if cell.drain_s is not None else ""
                        print(
                            f"round {rnd + 1} rows {n_rows:3d} clients {clients} {v:5s} p50 {cell.p50_ms:6.1f} ms"
                            f"  p95 {cell.p95_ms:6.1f}  p99 {cell.p99_ms:6.1f}  {cell.rps:6.0f} req/s{drain}",
                            flush=True,
                        )
        # "on" really logged: the router's acknowledged events, the receiver's accepted ones, rows in S3.
        on_acked = payload_events(routers["on"], "200")
        receiver_metrics = scrape(f"http://127.0.0.1:{log_port}")
        accepted = metric_sum(receiver_metrics, "sluice_inference_log_events_total", outcome="accepted")
        off_events = metric_sum(scrape(routers["off"]), "sluice_payload_events_total")  # any code
        deadline = time.monotonic() + 60
        in_s3 = stored_rows(settings, MODEL)
        while in_s3 < rows_on and time.monotonic() < deadline:
            time.sleep(1)
            in_s3 = stored_rows(settings, MODEL)
        down = ""
        if args.down:
            unreachable = payload_events(routers["down"], "unreachable")
            down = f"; down: {unreachable:.0f} events unreachable (none delivered)"
        checks = (
            f"on: {sent_on} requests sent, router acked {on_acked:.0f} events (want {2 * sent_on}), receiver accepted"
            f" {accepted:.0f}, rows in S3 {in_s3} (want {rows_on}); off: {off_events:.0f} events{down}"
        )
    print(f"\n{checks}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print(f"{args.requests} timed requests per variant and cell, {args.rounds} rounds; median [min-max] of rounds:\n")
    print(report(cells, variants, args))
    ok = on_acked == 2 * sent_on and accepted == 2 * sent_on and in_s3 == rows_on and off_events == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
