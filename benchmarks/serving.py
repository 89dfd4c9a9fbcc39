"""Serving benchmark: Sluice's runtime and MLServer + mlserver-mlflow side by side, same model, same run.

    uv run python benchmarks/serving.py --mlserver-venv /tmp/sluice-bench/mlserver-venv --out docs/...
    uv run python benchmarks/serving.py --baseline-src /tmp/sluice-base --rounds 3

With --baseline-src (a checkout of another commit: `git archive <commit> serving model | tar -x -C
DIR`), it instead compares this runtime with that one: both servers run at once, and each round loads
them in turn, the order alternating between rounds; it reports medians, spread and ratios.

For each server and each batch size (rows per request) it runs C concurrent clients for D seconds of
V2 REST requests and reports requests/s, p50/p99 latency, errors, and the peak resident memory of the
server's process tree. Both servers get the identical request body (pandas content type, strings
flagged `content_type: str` per input, which MLServer's codec needs and Sluice ignores), and their
answers are checked against mlflow.pyfunc on the same rows before timing starts.

The load generator runs on the same machine (asyncio + httpx, one process): on 2 cores it competes
with the server, so absolute figures are lower bounds; the comparison is what matters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rossmann"


@dataclass
class Result:
    server: str
    rows: int
    clients: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float


@dataclass
class ServerRun:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with suppress(psutil.NoSuchProcess):  # a worker may exit between listing and reading
            total += p.memory_info().rss
    return total


class PeakRss:
    """Samples the RSS of a process tree every 100 ms in a thread; `peak` in bytes."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_ready(run: ServerRun, timeout: float = 180) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if run.proc.poll() is not None:
            raise RuntimeError(f"{run.name} exited with {run.proc.returncode}:\n{tail(run.log)}")
        try:
            if httpx.get(f"{run.url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                run.startup_s = time.monotonic() - start
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{run.name} not ready after {timeout}s:\n{tail(run.log)}")


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def started(name: str, cmd: list[str], env: dict[str, str], url: str, log: Path, cwd: Path) -> Iterator[ServerRun]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    run = ServerRun(name, proc, url, log)
    try:
        wait_ready(run)
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def sluice_server(
    model_dir: Path, workdir: Path, name: str = "sluice", src: Path | None = None
) -> tuple[str, list[str], dict[str, str], str]:
    """The container command; `src`: run `serving` and `model` from that source tree instead."""
    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--http-port", str(http),
           "--grpc-port", str(grpc)]  # fmt: skip
    env = {**os.environ, "SLUICE_MAX_ROWS": "100000", "SLUICE_MODEL_VERSION": "bench"}
    if src is not None:
        env["PYTHONPATH"] = str(src)  # ahead of the editable install of this checkout
    return name, cmd, env, f"http://127.0.0.1:{http}"


def mlserver_server(venv: Path, model_dir: Path, workdir: Path) -> tuple[str, list[str], dict[str, str], str]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    repo = workdir / "mlserver"
    (repo / MODEL).mkdir(parents=True, exist_ok=True)
    # parallel_workers=0: inference in the server process. With the default (1 worker process),
    # MLServer 1.7.1 with the uvloop that resolves today (0.23) cannot start a worker at all:
    # `asyncio.get_event_loop()` in mlserver/parallel/worker.py raises "There is no current event
    # loop", the worker dies with exit code 256, and the model is removed from the registry.
    workers = int(os.environ.get("MLSERVER_PARALLEL_WORKERS", "0"))
    (repo / "settings.json").write_text(
        json.dumps({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": workers})
    )
    (repo / MODEL / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_mlflow.MLflowRuntime",
                "parameters": {"uri": str(model_dir)},
            }
        )
    )
    # The pyfunc is pickled by reference to this project's `model` package: MLServer needs it on the
    # path, exactly as the stock image would need it installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)
    return "mlserver", [str(venv / "bin" / "mlserver"), "start", str(repo)], env, f"http://127.0.0.1:{http}"


def request_body(rows: pd.DataFrame) -> bytes:
    inputs = []
    for c in rows.columns:
        if rows[c].dtype == object:
            inputs.append({"name": c, "datatype": "BYTES", "shape": [len(rows)], "data": rows[c].tolist(),
                           "parameters": {"content_type": "str"}})  # fmt: skip
        else:
            inputs.append({"name": c, "datatype": "INT64", "shape": [len(rows)], "data": rows[c].tolist()})
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


def predictions_of(body: dict[str, Any]) -> np.ndarray:
    [out] = [o for o in body["outputs"]]
    return np.asarray(out["data"], dtype=np.float64)


async def _load(url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=body, headers=headers)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def measure(run: ServerRun, rows: pd.DataFrame, clients: int, seconds: float, warmup: float) -> Result:
    url = f"{run.url}/v2/models/{MODEL}/infer"
    body = request_body(rows)
    asyncio.run(_load(url, body, clients, warmup))
    with PeakRss(run.proc.pid) as rss:
        started_at = time.perf_counter()
        latencies, errors = asyncio.run(_load(url, body, clients, seconds))
        elapsed = time.perf_counter() - started_at
    lat = np.asarray(latencies) * 1000
    return Result(
        server=run.name,
        rows=len(rows),
        clients=clients,
        seconds=round(elapsed, 1),
        requests=len(latencies),
        errors=errors,
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(float(np.percentile(lat, 50)), 1) if lat.size else float("nan"),
        p99_ms=round(float(np.percentile(lat, 99)), 1) if lat.size else float("nan"),
        peak_rss_mb=round(rss.peak / 2**20, 1),
    )


def check_answers(run: ServerRun, rows: pd.DataFrame, expected: np.ndarray) -> str:
    r = httpx.post(f"{run.url}/v2/models/{MODEL}/infer", content=request_body(rows),
                   headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    got = predictions_of(r.json())
    if not np.allclose(got, expected, rtol=1e-5):
        return f"predictions differ from mlflow.pyfunc (max abs diff {np.max(np.abs(got - expected)):.3f})"
    return "ok"


def make_model(out: Path) -> tuple[Path, pd.DataFrame]:
    from model.pyfunc import save_pyfunc
    from model.synthetic import generate
    from model.training import TrainConfig, train

    raw = generate(stores=60, days=400, seed=7)
    if out.exists():
        shutil.rmtree(out)
    save_pyfunc(train(raw, TrainConfig.quick(), progress=False), out)
    rows = raw.train[["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]].tail(1000)
    rows = rows.assign(
        Date=pd.to_datetime(rows["Date"]).dt.strftime("%Y-%m-%d"), StateHoliday=rows["StateHoliday"].astype(str)
    )
    for c in ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday"):
        rows[c] = rows[c].astype("int64")
    return out, rows.reset_index(drop=True)


def markdown(results: list[Result], notes: dict[str, list[str]]) -> str:
    lines = [
        "| server | rows/request | clients | requests/s | p50 ms | p99 ms | errors | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        cells = [r.server, r.rows, r.clients, r.rps, r.p50_ms, r.p99_ms, r.errors, r.peak_rss_mb]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for server, items in notes.items():
        for note in items:
            lines.append(f"\n- {server}: {note}")
    return "\n".join(lines)


def compare(model_dir: Path, rows: pd.DataFrame, baseline: Path, workdir: Path, args: argparse.Namespace) -> str:
    """This runtime against `baseline`, both running, rounds in alternating order; a markdown table."""
    servers = [sluice_server(model_dir, workdir, "this"), sluice_server(model_dir, workdir, "baseline", baseline)]
    results: dict[tuple[str, int], list[Result]] = {}
    with contextlib.ExitStack() as stack:
        runs = [
            stack.enter_context(
                started(name, cmd, env, url, workdir / f"{name}.log", baseline if name == "baseline" else ROOT)
            )
            for name, cmd, env, url in servers
        ]
        for round_ in range(args.rounds):
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                for n in args.rows:
                    result = measure(run, rows.head(n), args.clients, args.seconds, args.warmup)
                    print(json.dumps({"round": round_, **asdict(result)}), flush=True)
                    results.setdefault((run.name, n), []).append(result)
    lines = [
        "| rows/request | server | requests/s median (min-max) | p50 ms | p99 ms | errors | peak RSS MB | rps ratio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in args.rows:
        base_rps = float(np.median([r.rps for r in results[("baseline", n)]]))
        for name in ("this", "baseline"):
            rs = results[(name, n)]
            rps = [r.rps for r in rs]
            ratio = f"{float(np.median(rps)) / base_rps:.2f}" if name == "this" else ""
            lines.append(
                f"| {n} | {name} | {np.median(rps):.1f} ({min(rps):.1f}-{max(rps):.1f}) "
                f"| {np.median([r.p50_ms for r in rs]):.1f} | {np.median([r.p99_ms for r in rs]):.1f} "
                f"| {sum(r.errors for r in rs)} | {max(r.peak_rss_mb for r in rs):.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    p.add_argument("--mlserver-venv", type=Path, default=None, help="virtualenv with mlserver + mlserver-mlflow")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--baseline-src", type=Path, default=None, help="compare with the runtime in this source tree")
    p.add_argument("--rounds", type=int, default=3, help="with --baseline-src: rounds, order alternating")
    args = p.parse_args(argv)

    import mlflow.pyfunc

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, all_rows = make_model(workdir / "model")
    expected = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(all_rows), dtype=np.float64)
    if args.baseline_src:
        print(compare(model_dir, all_rows, args.baseline_src.resolve(), workdir, args))
        return 0

    servers = [sluice_server(model_dir, workdir)]
    if args.mlserver_venv:
        servers.append(mlserver_server(args.mlserver_venv, model_dir, workdir))
    results: list[Result] = []
    notes: dict[str, list[str]] = {}
    for name, cmd, env, url in servers:
        log = workdir / f"{name}.log"
        try:
            with started(name, cmd, env, url, log, ROOT) as run:
                idle = tree_rss(run.proc.pid) / 2**20
                notes.setdefault(name, []).append(f"ready after {run.startup_s:.1f} s; idle RSS {idle:.0f} MB")
                answer = check_answers(run, all_rows.head(max(args.rows)), expected[: max(args.rows)])
                notes[name].append(f"answers vs mlflow.pyfunc: {answer}")
                for n in args.rows:
                    result = measure(run, all_rows.head(n), args.clients, args.seconds, args.warmup)
                    print(json.dumps(asdict(result)), flush=True)
                    results.append(result)
        except RuntimeError as e:
            notes.setdefault(name, []).append(f"could not serve the model: {str(e)[-1500:]}")
            print(f"{name}: {e}", file=sys.stderr)
    print(markdown(results, notes))
    if args.out:
        args.out.write_text(json.dumps({"results": [asdict(r) for r in results], "notes": notes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
