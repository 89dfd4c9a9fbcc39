"""Serving benchmark: Sluice's runtime and MLServer + mlserver-mlflow side by side, same model, same run.

    OMP_NUM_THREADS=1 uv run python benchmarks/serving.py --mlserver-venv /tmp/sluice-bench/mlserver-venv \
        --rows 1 1000 --clients 4 1 --rounds 3 --out /tmp/serving.json
    uv run python benchmarks/serving.py --baseline-src /tmp/sluice-base --rounds 3
    OMP_NUM_THREADS=1 uv run python benchmarks/serving.py --mlserver-venv ... \
        --model-dir DIR --data-dir ../shared/data/rossmann

By default both serve the quick preset trained on generated data; `--model-dir` serves a saved MLflow
model instead (e.g. the registered configuration trained on the real data), with the last 1,000 rows of
`--data-dir`'s train.csv as requests.

Both servers run at once (this runtime and MLServer, or with --baseline-src the runtime in another
source tree: `git archive <commit> serving model | tar -x -C DIR`); each round loads them in turn, the
order alternating between rounds. For each server, each client count and each batch size (rows per
request) it runs C concurrent clients for D seconds of V2 REST requests and records requests/s,
p50/p99 latency, errors, and the peak resident memory of the server's process tree; it reports medians
with their spread and the requests/s ratio of every round. Both servers get the identical request
body (pandas content type, strings flagged `content_type: str` per input, which MLServer's codec needs
and Sluice ignores), and their answers are checked against mlflow.pyfunc on the same rows before
timing starts.

The load generator runs on the same 2 cores as the servers. `--client wrk` (the default) drives them
with wrk (C, epoll; one thread, C keep-alive connections, a Lua script posting the pre-encoded body),
which costs the cores far less per request than `--client httpx` (asyncio + httpx in this process,
~0.9 ms of CPU per 1-row request), so the figures show the servers rather than the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
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
    # CPU seconds the server's process tree used per answered request, in microseconds: what a request
    # costs the server, which other work on shared cores moves much less than requests/s.
    cpu_us: float = float("nan")


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


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its children (the workers of `--workers`); empty once it has gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process tree."""
    total = 0.0
    for p in process_tree(pid):
        with suppress(psutil.NoSuchProcess):  # a worker may exit between listing and reading
            times = p.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with suppress(psutil.NoSuchProcess):
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


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group a server was started in (start_new_session), SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
        stop_group(proc)


def sluice_server(
    model_dir: Path, workdir: Path, name: str = "sluice", src: Path | None = None, workers: int = 1
) -> tuple[str, list[str], dict[str, str], str]:
    """The container command; `src`: run `serving` and `model` from that source tree instead."""
    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--http-port", str(http),
           "--grpc-port", str(grpc)]  # fmt: skip
    if workers > 1:
        cmd += ["--workers", str(workers)]
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


def lua_script(bodies: list[bytes]) -> str:
    """wrk script that POSTs the bodies in turn."""
    quoted = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
    return f"""
local bodies = {{
{quoted}
}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, bodies[i])
end
"""


def parse_wrk(text: str) -> tuple[int, float, dict[str, float], int, dict[str, int]]:
    """(requests, requests/s, latency percentiles in ms, non-2xx, socket errors) from `wrk --latency`."""

    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    latency = {
        f"p{p}": ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, flags=re.MULTILINE)
    }
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors = dict(zip(errors, map(int, m.groups()), strict=True))
    return requests, rps, latency, non_2xx, errors


def load_average() -> list[float]:
    return [round(float(x), 2) for x in Path("/proc/loadavg").read_text().split()[:3]]


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


def _wrk(wrk: str, url: str, script: Path, clients: int, seconds: float) -> str:
    out = subprocess.run(
        [wrk, "-t", "1", "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "30s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def measure(
    run: ServerRun, rows: pd.DataFrame, clients: int, seconds: float, warmup: float, wrk: str | None = None
) -> Result:
    """One case: `wrk` (path to the binary) drives the server with wrk, else httpx in this process."""
    url = f"{run.url}/v2/models/{MODEL}/infer"
    body = request_body(rows)
    if wrk is not None:
        script = run.log.with_name(f"{run.name}-{len(rows)}.lua")
        script.write_text(lua_script([body]))
        _wrk(wrk, url, script, clients, warmup)
        cpu = tree_cpu(run.proc.pid)
        with PeakRss(run.proc.pid) as rss:
            text = _wrk(wrk, url, script, clients, seconds)
        cpu = tree_cpu(run.proc.pid) - cpu
        requests, rps, latency, non_2xx, socket_errors = parse_wrk(text)
        value, unit = re.search(r"requests in ([\d.]+)(ms|s|m),", text).groups()  # type: ignore[union-attr]
        elapsed = float(value) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
        return Result(
            server=run.name,
            rows=len(rows),
            clients=clients,
            seconds=round(elapsed, 1),
            requests=requests - non_2xx,
            errors=non_2xx + sum(socket_errors.values()),
            rps=round(rps, 1),
            p50_ms=round(latency["p50"], 2),
            p99_ms=round(latency["p99"], 2),
            peak_rss_mb=round(rss.peak / 2**20, 1),
            cpu_us=round(1e6 * cpu / max(1, requests), 1),
        )
    asyncio.run(_load(url, body, clients, warmup))
    cpu = tree_cpu(run.proc.pid)
    with PeakRss(run.proc.pid) as rss:
        started_at = time.perf_counter()
        latencies, errors = asyncio.run(_load(url, body, clients, seconds))
        elapsed = time.perf_counter() - started_at
    cpu = tree_cpu(run.proc.pid) - cpu
    lat = np.asarray(latencies) * 1000
    return Result(
        server=run.name,
        rows=len(rows),
        clients=clients,
        seconds=round(elapsed, 1),
        requests=len(latencies),
        errors=errors,
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(float(np.percentile(lat, 50)), 2) if lat.size else float("nan"),
        p99_ms=round(float(np.percentile(lat, 99)), 2) if lat.size else float("nan"),
        peak_rss_mb=round(rss.peak / 2**20, 1),
        cpu_us=round(1e6 * cpu / max(1, len(latencies)), 1),
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
    return out, request_rows(raw.train)


def real_rows(data_dir: Path) -> pd.DataFrame:
    """The last 1,000 rows of a Kaggle-format train.csv: requests for a model trained on that data."""
    from model.data import load_raw

    return request_rows(load_raw(data_dir).train)


def request_rows(train: pd.DataFrame) -> pd.DataFrame:
    rows = train[["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]].tail(1000)
    rows = rows.assign(
        Date=pd.to_datetime(rows["Date"]).dt.strftime("%Y-%m-%d"), StateHoliday=rows["StateHoliday"].astype(str)
    )
    for c in ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday"):
        rows[c] = rows[c].astype("int64")
    return rows.reset_index(drop=True)


def _spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def markdown(results: dict[tuple[str, int, int], list[Result]], names: list[str], args: argparse.Namespace) -> str:
    """Medians (min-max) per server and case; with two servers, the first's rps over the second's."""
    lines = [
        "| rows/request | clients | server | requests/s | p50 ms | p99 ms | errors | peak RSS MB "
        "| server CPU us/request | rps ratio per round | ratio of medians |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]  # fmt: skip
    for clients in args.clients:
        for n in args.rows:
            for i, name in enumerate(names):
                rs = results.get((name, clients, n), [])
                if not rs:
                    continue
                ratios, ratio = "", ""
                if i == 0 and len(names) > 1 and (other := results.get((names[1], clients, n))):
                    ratios = ", ".join(f"{a.rps / b.rps:.2f}" for a, b in zip(rs, other, strict=False))
                    ratio = f"**{np.median([r.rps for r in rs]) / np.median([r.rps for r in other]):.2f}**"
                lines.append(
                    f"| {n} | {clients} | {name} | {_spread([r.rps for r in rs])} "
                    f"| {_spread([r.p50_ms for r in rs], '.2f')} | {_spread([r.p99_ms for r in rs], '.2f')} "
                    f"| {sum(r.errors for r in rs)} | {max(r.peak_rss_mb for r in rs):.0f} "
                    f"| {_spread([r.cpu_us for r in rs], '.0f')} | {ratios} | {ratio} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[4], help="concurrent clients; one case per value")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    p.add_argument("--client", choices=["wrk", "httpx"], default="wrk", help="load generator (default: wrk)")
    p.add_argument("--mlserver-venv", type=Path, default=None, help="virtualenv with mlserver + mlserver-mlflow")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--baseline-src", type=Path, default=None, help="compare with the runtime in this source tree")
    p.add_argument("--rounds", type=int, default=3, help="rounds, server order alternating")
    p.add_argument(
        "--sluice-workers", type=int, default=1, help="run this runtime with --workers N (default 1: one process)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="serve this MLflow model directory (e.g. the registered configuration trained on the real data) "
        "instead of training the quick preset; needs --data-dir",
    )
    p.add_argument("--data-dir", type=Path, default=None, help="with --model-dir: request rows from its train.csv")
    args = p.parse_args(argv)
    if (args.model_dir is None) != (args.data_dir is None):
        p.error("--model-dir and --data-dir go together: the request rows must be rows the model knows")
    wrk = None
    if args.client == "wrk":
        wrk = shutil.which("wrk")
        if wrk is None:
            print("serving: --client wrk needs wrk on PATH (Debian: apt-get install wrk)", file=sys.stderr)
            return 2

    import mlflow.pyfunc

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model_dir is not None:
        model_dir, all_rows = args.model_dir.resolve(), real_rows(args.data_dir)
    else:
        model_dir, all_rows = make_model(workdir / "model")
    expected = np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(all_rows), dtype=np.float64)

    servers: list[tuple[tuple[str, list[str], dict[str, str], str], Path]] = []
    if args.baseline_src:
        baseline = args.baseline_src.resolve()
        servers += [(sluice_server(model_dir, workdir, "this"), ROOT)]
        servers += [(sluice_server(model_dir, workdir, "baseline", baseline), baseline)]
    else:
        name = "sluice" if args.sluice_workers == 1 else f"sluice-{args.sluice_workers}-workers"
        servers += [(sluice_server(model_dir, workdir, name, workers=args.sluice_workers), ROOT)]
        if args.mlserver_venv:
            servers += [(mlserver_server(args.mlserver_venv, model_dir, workdir), ROOT)]
    names = [spec[0] for spec, _ in servers]
    load_start = load_average()
    results: dict[tuple[str, int, int], list[Result]] = {}
    notes: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        runs = []
        for (name, cmd, env, url), cwd in servers:
            run = stack.enter_context(started(name, cmd, env, url, workdir / f"{name}.log", cwd))
            idle = tree_rss(run.proc.pid) / 2**20
            answer = check_answers(run, all_rows.head(max(args.rows)), expected[: max(args.rows)])
            notes[name] = [f"ready after {run.startup_s:.1f} s; idle RSS {idle:.0f} MB",
                           f"answers vs mlflow.pyfunc ({max(args.rows)} rows): {answer}"]  # fmt: skip
            print(f"{name}: {'; '.join(notes[name])}", flush=True)
            if answer != "ok":
                print(f"{name}: answers differ, not timing it", file=sys.stderr)
                continue
            runs.append(run)
        for round_ in range(args.rounds):
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                for clients in args.clients:
                    for n in args.rows:
                        result = measure(run, all_rows.head(n), clients, args.seconds, args.warmup, wrk)
                        print(json.dumps({"round": round_, **asdict(result)}), flush=True)
                        results.setdefault((run.name, clients, n), []).append(result)
    load_end = load_average()
    print(f"\nclient: {args.client}; load average at start {load_start}, at end {load_end}")
    print(markdown(results, names, args))
    for name, items in notes.items():
        for note in items:
            print(f"- {name}: {note}")
    if args.out:
        out = {
            "client": args.client,
            "load_average": {"start": load_start, "end": load_end},
            "results": [asdict(r) for rs in results.values() for r in rs],
            "notes": notes,
        }
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
