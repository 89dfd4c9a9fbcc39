"""Client traffic for the demo, the tests and the benchmarks: real V2 inference calls over HTTP.

Requests are one input per column, a few store-days each, built from the data a model was trained
on; each response's `x-sluice-revision` header (set by the cluster stand-in's router) says which
revision answered, so the caller sees the canary share as a client would.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

STATUS_PATH = "/sluice/standin"  # pipelines.platform.standin.router.STATUS_PATH
REVISION_HEADER = "x-sluice-revision"  # pipelines.platform.standin.router.REVISION_HEADER (no starlette import here)
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


def serving(base_url: str, model: str) -> dict[str, int]:
    """What the stand-in's router sends where now: {version: percent} of targets with a ready pod."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(base_url.rstrip("/") + STATUS_PATH, timeout=3) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    for t in (data.get("services", {}).get(model) or {}).get("traffic", []):
        if t.get("endpoints") and t.get("percent"):
            out[str(t["version"])] = out.get(str(t["version"]), 0) + int(t["percent"])
    return out


def wait_until_served(base_url: str, model: str, version: str, timeout: float = 300.0) -> None:
    """Block until `version` of `model` gets traffic from the stand-in (its pods are ready)."""
    deadline = time.monotonic() + timeout
    while version not in serving(base_url, model):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} v{version} not served within {timeout:.0f}s: {serving(base_url, model)}")
        time.sleep(0.5)


class BackgroundTraffic:
    """Clients that keep calling while something else happens (a rollout): answers per revision and
    time, and failures, collected from a thread."""

    def __init__(self, traffic: Traffic, batch: int = 50):
        self.traffic, self.batch = traffic, batch
        self.answers: list[tuple[float, str]] = []  # (time, revision) of every answer
        self._failed: list[tuple[float, Counter[str]]] = []  # (time, failures) of every batch that had any
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            result = self.traffic.send(self.batch)
            now = time.time()
            self.answers += [(now, rev) for rev, n in result.revisions.items() for _ in range(n)]
            if result.failures:
                self._failed.append((now, Counter(result.failures)))

    def seen(self, since: float = 0.0) -> Counter[str]:
        return Counter(rev for t, rev in self.answers if t >= since)

    @property
    def failures(self) -> Counter[str]:
        return self.failed()

    def failed(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Failures of the batches answered in [since, until)."""
        out: Counter[str] = Counter()
        for t, failures in list(self._failed):
            if since <= t < until:
                out.update(failures)
        return out

    def __enter__(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
