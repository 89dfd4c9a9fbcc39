"""One runtime process or two: what `python -m serving --workers 2` adds on the same cores.

    OMP_NUM_THREADS=1 uv run python benchmarks/processes.py --rows 1 --clients 4 --rounds 3

Three ways to serve the same quick model, all running at once, measured in turn:
- `one`: one runtime process (one event loop), wrk with C connections;
- `workers`: `--workers 2`, two runtime processes accepting from one HTTP socket (serving.workers),
  wrk with C connections to its one port;
- `two-ports`: two independent runtime processes on their own ports, each driven by its own wrk with
  C/2 connections: a perfect balance, the ceiling for `workers`.
Everything shares the machine's cores with wrk. The order rotates between rounds; prints medians,
spreads and, per round, each case's requests/s over `one`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.serving import (
    MODEL,
    PeakRss,
    ServerRun,
    _wrk,
    lua_script,
    make_model,
    parse_wrk,
    request_body,
    sluice_server,
    started,
)


def _case(
    runs: list[ServerRun], rows_body: bytes, clients: int, seconds: float, warmup: float, wrk: str, tmp: Path
) -> dict[str, float]:
    """Drive every server at once, `clients` connections split evenly; summed requests/s, worst p50/p99."""
    script = tmp / "body.lua"
    script.write_text(lua_script([rows_body]))
    share = max(1, clients // len(runs))
    urls = [f"{r.url}/v2/models/{MODEL}/infer" for r in runs]
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda u: _wrk(wrk, u, script, share, warmup), urls))
        with ExitStack() as stack:
            peaks = [stack.enter_context(PeakRss(r.proc.pid)) for r in runs]
            texts = list(pool.map(lambda u: _wrk(wrk, u, script, share, seconds), urls))
    parsed = [parse_wrk(t) for t in texts]
    return {
        "rps": round(sum(p[1] for p in parsed), 1),
        "p50_ms": round(max(p[2]["p50"] for p in parsed), 2),
        "p99_ms": round(max(p[2]["p99"] for p in parsed), 2),
        "errors": sum(p[3] + sum(p[4].values()) for p in parsed),
        "rss_mb": round(sum(p.peak for p in peaks) / 2**20, 1),
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--clients", type=int, default=4, help="connections in all, split over the processes (default 4)")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        p.error("wrk is not installed (apt-get install wrk)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="sluice-procs-"))
    model_dir, rows = make_model(tmp / "model")
    body = request_body(rows.head(args.rows))
    cases = ["one", "workers", "two-ports"]
    results: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    with ExitStack() as stack:
        servers = {}
        for name, extra in (("sluice-0", []), ("sluice-1", []), ("workers", ["--workers", "2"])):
            name, cmd, env, url = sluice_server(model_dir, tmp, name=name)
            servers[name] = stack.enter_context(started(name, [*cmd, *extra], env, url, tmp / f"{name}.log", tmp))
        runs = {"one": [servers["sluice-0"]], "workers": [servers["workers"]], "two-ports": list(servers.values())[:2]}
        for rnd in range(args.rounds):
            order = cases[rnd % 3 :] + cases[: rnd % 3]
            for case in order:
                res = _case(runs[case], body, args.clients, args.seconds, args.warmup, wrk, tmp)
                results[case].append(res)
                print(f"round {rnd + 1}: {case}: {json.dumps(res)}", flush=True)
    print(f"\n{args.rows} row(s) per request, {args.clients} connections in all, {args.rounds} rounds:")
    print(
        "| case | requests/s | worst p50 ms | worst p99 ms | peak RSS MB (all processes) | errors "
        "| ratio to one, per round |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for case in cases:
        rs = results[case]
        ratios = ", ".join(f"{r['rps'] / o['rps']:.2f}" for r, o in zip(rs, results["one"], strict=True))
        print(
            f"| {case} | {_spread([r['rps'] for r in rs])} | {_spread([r['p50_ms'] for r in rs])} | "
            f"{_spread([r['p99_ms'] for r in rs])} | {max(r['rss_mb'] for r in rs):.0f} | "
            f"{sum(r['errors'] for r in rs):.0f} | {ratios} |"
        )
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
