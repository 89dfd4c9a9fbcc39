"""Drive `sluice serve --gitops` from outside, as `make demo` and the end-to-end test do: start it as a
process, wait until it serves a given commit, and send it client traffic.

Requests are real V2 inference calls (one input per column, a few store-days each) built from the data a
model was trained on; each response's `x-sluice-revision` header says which revision answered, so the
caller sees the canary share as a client would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

REVISION_HEADER = "x-sluice-revision"  # serving.gitops_preview.REVISION_HEADER (not imported: no kserve here)
STATUS_PATH = "/sluice/gitops"  # serving.gitops_preview.STATUS_PATH
INPUT_COLUMNS = ["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]
INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


def request_rows(train: pd.DataFrame, days: int = 42, open_only: bool = True) -> pd.DataFrame:
    """Store-days a client would ask about: the last `days` days of `train`, typed as the signature wants."""
    dates = pd.to_datetime(train["Date"])
    rows = train[dates >= dates.max() - pd.Timedelta(days=days - 1)]
    if open_only:
        rows = rows[rows["Open"] == 1]
    rows = rows[INPUT_COLUMNS].copy()
    rows["Date"] = pd.to_datetime(rows["Date"]).dt.strftime("%Y-%m-%d")
    rows["StateHoliday"] = rows["StateHoliday"].astype(str)
    for c in INT_COLUMNS:
        rows[c] = rows[c].astype("int64")
    return rows.reset_index(drop=True)


def v2_body(rows: pd.DataFrame) -> dict[str, Any]:
    inputs = []
    for c in rows.columns:
        datatype = "INT64" if c in INT_COLUMNS else "BYTES"
        inputs.append({"name": c, "datatype": datatype, "shape": [len(rows)], "data": rows[c].tolist()})
    return {"inputs": inputs}


@dataclass
class TrafficResult:
    revisions: Counter[str] = field(default_factory=Counter)  # x-sluice-revision -> responses
    failures: Counter[str] = field(default_factory=Counter)  # "HTTP 500: ..." -> count
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.revisions.values()) + sum(self.failures.values())

    def share(self, revision: str) -> float:
        ok = sum(self.revisions.values())
        return self.revisions[revision] / ok if ok else 0.0

    def summary(self) -> str:
        parts = [f"{rev} {n} ({n / max(self.total, 1):.1%})" for rev, n in sorted(self.revisions.items())]
        parts += [f"{reason}: {n}" for reason, n in self.failures.items()]
        return f"{self.total} requests in {self.seconds:.1f}s: " + ", ".join(parts)


class Traffic:
    """Sends V2 requests of `rows_per_request` random rows to `<base_url>/v2/models/<model>/infer`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        rows: pd.DataFrame,
        rows_per_request: int = 5,
        concurrency: int = 4,
        seed: int = 0,
        timeout: float = 30.0,
    ):
        import httpx

        self.url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
        self.rows = rows
        self.rows_per_request = rows_per_request
        self.concurrency = max(1, concurrency)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=self.concurrency))
        # Pre-built bodies: the client should not be the bottleneck.
        self._bodies = [self._body() for _ in range(256)]

    def _body(self) -> dict[str, Any]:
        idx = [self._rng.randrange(len(self.rows)) for _ in range(self.rows_per_request)]
        return v2_body(self.rows.iloc[idx])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        n: int,
        until: Callable[[Counter[str]], bool] | None = None,
        progress: Callable[[TrafficResult], None] | None = None,
        progress_every: int = 500,
    ) -> TrafficResult:
        """Send up to `n` requests (stop early once `until(revisions)` holds); count who answered."""
        result = TrafficResult()
        started = time.perf_counter()
        issued = 0
        done = threading.Event()

        def one(i: int) -> None:
            body = self._bodies[i % len(self._bodies)]
            try:
                r = self._client.post(self.url, json=body)
                key = r.headers.get(REVISION_HEADER, "?") if r.status_code == 200 else f"HTTP {r.status_code}"
                failed = r.status_code != 200
                detail = r.text[:120] if failed else ""
            except Exception as exc:  # a refused connection is a failure to report, not a crash
                key, failed, detail = type(exc).__name__, True, str(exc)[:120]
            with self._lock:
                if failed:
                    result.failures[f"{key} {detail}".strip()] += 1
                else:
                    result.revisions[key] += 1
                total = result.total
                if until is not None and until(result.revisions):
                    done.set()
                if progress is not None and total % progress_every == 0:
                    result.seconds = time.perf_counter() - started
                    progress(result)

        def worker() -> None:
            nonlocal issued
            while not done.is_set():
                with self._lock:
                    if issued >= n:
                        return
                    i = issued
                    issued += 1
                one(i)

        with ThreadPoolExecutor(self.concurrency) as pool:
            for f in [pool.submit(worker) for _ in range(self.concurrency)]:
                f.result()
        result.seconds = time.perf_counter() - started
        return result


class PreviewError(RuntimeError):
    """The preview server exited or did not get to the expected state; the message ends with its log."""


class PreviewProcess:
    """`sluice serve --gitops REPO` as a child process (the real CLI), with its output in `log`."""

    def __init__(
        self,
        repo: Path,
        http_port: int,
        grpc_port: int,
        log: Path,
        model: str | None = None,
        poll_seconds: float = 1.0,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ):
        self.repo, self.http_port, self.grpc_port, self.log = Path(repo), http_port, grpc_port, Path(log)
        self.host = host
        self.command = [
            sys.executable, "-m", "pipelines.cli", "serve", "--gitops", str(self.repo),
            "--host", host, "--port", str(http_port), "--grpc-port", str(grpc_port),
            "--poll-interval", f"{poll_seconds:g}",
            *(["--model", model] if model else []),
        ]  # fmt: skip
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def start(self) -> PreviewProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("ab")
        # A session of its own: stop() can clean up whatever the server leaves behind (download workers).
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def logs(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def status(self) -> dict[str, Any] | None:
        """What the server says it serves (GET /sluice/gitops), or None while it is not answering."""
        try:
            with urllib.request.urlopen(self.url + STATUS_PATH, timeout=2) as resp:
                data = json.loads(resp.read())
                return data if isinstance(data, dict) else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_for(self, commit: str, timeout: float = 180.0) -> dict[str, Any]:
        """Block until the server serves what `commit` declares; its status then."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PreviewError(f"the preview server exited with {self.proc.returncode}:\n{self.logs()}")
            status = self.status()
            if status is not None and status.get("commit") == commit:
                return status
            time.sleep(0.25)
        raise PreviewError(
            f"the preview server did not serve {commit[:10]} within {timeout:g}s ({status}):\n{self.logs()}"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not stop in `timeout` seconds; then SIGKILL
        anything left in its process group (its own children only: the group is the server's session)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.proc.returncode

    def __enter__(self) -> PreviewProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
