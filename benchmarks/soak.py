"""Soak benchmark: a long load at fixed concurrency against the runtime on loopback.

    uv run python -m benchmarks.soak --minutes 10 --connections 16 --out /tmp/soak.json

Trains the quick model on synthetic data (as benchmarks/serving.py does), starts the container
command (`python -m serving`) on free ports, and drives it with wrk (Debian's `wrk`: C, epoll, so the
load generator takes little of the 2 cores the server runs on) for the whole duration, rotating
request bodies of `--rows` rows each. Meanwhile it samples the server's resident memory. It reports:
- wrk's totals: requests, requests/s, latency percentiles, non-2xx responses and socket errors;
- the server's own count of the same requests (`sluice_inference_requests_total` by outcome), which
  must equal wrk's (plus at most the requests in flight when wrk stops) with no `invalid`/`error`;
- resident memory over time (per minute) and its least-squares slope after the first minute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.serving import (
    MODEL,
    ROOT,
    load_average,
    lua_script,
    make_model,
    parse_wrk,
    request_body,
    sluice_server,
    started,
    tree_rss,
)

OUTCOMES = ("ok", "invalid", "error")


@dataclass
class SoakResult:
    date: str
    minutes: float
    connections: int
    rows: list[int]
    requests: int
    rps: float
    latency_ms: dict[str, float]
    non_2xx: int
    socket_errors: dict[str, int]
    server_counts: dict[str, float]
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    rss_slope_mb_per_min: float = 0.0
    load_average: list[float] = field(default_factory=list)


def outcome_counts(url: str) -> dict[str, float]:
    counts = dict.fromkeys(OUTCOMES, 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "sluice_inference_requests_total" and s.labels.get("model") == MODEL:
                counts[s.labels["outcome"]] += s.value
    return counts


class RssSampler:
    """RSS of a process tree every `every` seconds, in a thread: (seconds since start, MB)."""

    def __init__(self, pid: int, every: float):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - start, 1), round(tree_rss(self.pid) / 2**20, 1)))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slope_per_minute(samples: list[tuple[float, float]], skip_s: float = 60) -> float:
    """Least-squares slope of RSS (MB per minute) after the first `skip_s` seconds (warm-up growth)."""
    points = np.asarray([(t, mb) for t, mb in samples if t >= skip_s])
    if len(points) < 2:
        return float("nan")
    return float(np.polyfit(points[:, 0] / 60, points[:, 1], 1)[0])


def markdown(r: SoakResult) -> str:
    per_minute = {}
    for t, mb in r.rss_mb:
        per_minute[int(t // 60)] = mb  # the last sample in each minute
    lat = r.latency_ms
    lines = [
        f"{r.date}: {r.minutes:g} min, {r.connections} connections, bodies of {r.rows} rows in turn; "
        f"load average (1/5/15 min) {r.load_average[:3]} before, {r.load_average[3:]} after",
        "",
        "| requests | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors | server ok / invalid / error |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {r.requests} | {r.rps:.1f} | {lat.get('p50', float('nan')):.1f} | {lat.get('p90', float('nan')):.1f} "
        f"| {lat.get('p99', float('nan')):.1f} | {r.non_2xx} | {sum(r.socket_errors.values())} "
        f"| {r.server_counts['ok']:.0f} / {r.server_counts['invalid']:.0f} / {r.server_counts['error']:.0f} |",
        "",
        "| minute | " + " | ".join(str(m) for m in per_minute) + " |",
        "| --- | " + " | ".join("---:" for _ in per_minute) + " |",
        "| RSS MB | " + " | ".join(f"{mb:.0f}" for mb in per_minute.values()) + " |",
        "",
        f"RSS slope after the first minute: {r.rss_slope_mb_per_min:+.2f} MB/min",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 10, 100], help="rows per request body, in turn")
    p.add_argument("--sample-seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=15, help="seconds of load before the measured run")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("soak: needs wrk on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, rows = make_model(workdir / "model")
    script = workdir / "soak.lua"
    script.write_text(lua_script([request_body(rows.head(n)) for n in args.rows]))
    name, cmd, env, url = sluice_server(model_dir, workdir)
    infer = f"{url}/v2/models/{MODEL}/infer"

    def run_wrk(seconds: float) -> str:
        out = subprocess.run(
            [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{int(seconds)}s", "--latency",
             "--timeout", "30s", "-s", str(script), infer],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout

    with started(name, cmd, env, url, workdir / "server.log", ROOT) as run:
        run_wrk(args.warmup)
        before, load_before = outcome_counts(url), load_average()
        with RssSampler(run.proc.pid, args.sample_seconds) as rss:
            text = run_wrk(args.minutes * 60)
        after = outcome_counts(url)
        print(text)
    requests, rps, latency, non_2xx, socket_errors = parse_wrk(text)
    result = SoakResult(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        minutes=args.minutes,
        connections=args.connections,
        rows=args.rows,
        requests=requests,
        rps=rps,
        latency_ms=latency,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        server_counts={o: after[o] - before[o] for o in OUTCOMES},
        rss_mb=rss.samples,
        rss_slope_mb_per_min=round(slope_per_minute(rss.samples), 3),
        load_average=[*load_before, *load_average()],
    )
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    failed = non_2xx or sum(socket_errors.values()) or result.server_counts["invalid"] or result.server_counts["error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
