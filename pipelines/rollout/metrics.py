"""Observe a canary: the gate window of each revision, computed by Prometheus.

One provider, the same locally and in a cluster: Prometheus scrapes every runtime pod (the local
stand-in writes them as file_sd targets; in a cluster a PodMonitor does), and every figure is an
`increase()` over the step's own time range, evaluated at an explicit end time and summed over pods
(`sum by (revision)`). Counter resets (a pod restarted), pods that scale away mid-window and
pods that appear are all handled by Prometheus' rate functions rather than by differences of raw
counters. Canary and stable are compared over the same range.

Series (serving/metrics.py exports them; `revision` is a target label: the stand-in's file_sd labels,
or the PodMonitor's relabeling of `serving.knative.dev/revision` in a cluster):
  sluice_inference_requests_total{model, version, outcome=ok|invalid|error}
  sluice_inference_duration_seconds_bucket{model, version, le}
  sluice_prediction_value_sum / _count{model, version}
  sluice_router_requests_total{model, revision, code}   (the stand-in's router; failures a pod
                                                         never answered: timeouts, refused, reset)
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.rollout.decide import GateReport, RevisionWindow

REQUESTS = "sluice_inference_requests_total"
LATENCY = "sluice_inference_duration_seconds_bucket"
PREDICTION_SUM = "sluice_prediction_value_sum"
PREDICTION_COUNT = "sluice_prediction_value_count"
ROUTER = "sluice_router_requests_total"
MIRROR_SUM = "sluice_mirror_divergence_sum_total"
MIRROR_COUNT = "sluice_mirror_divergence_count_total"
TIMEOUT = 10.0


class MetricsError(RuntimeError):
    """Prometheus could not answer; the message names the URL and the cause."""


@dataclass(frozen=True)
class Selector:
    """Which label tells the two revisions apart, and its value for each."""

    label: str  # "revision" (names from the cluster) or "version" (no cluster: versions differ)
    canary: str
    stable: str


def _get(base: str, path: str, params: dict[str, str]) -> dict[str, Any]:
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise MetricsError(f"Prometheus at {base}: HTTP {exc.code} for {params.get('query', path)}: {detail}") from exc
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise MetricsError(f"cannot query Prometheus at {base}: {exc}") from exc
    if body.get("status") != "success":
        raise MetricsError(f"Prometheus at {base}: query failed: {body.get('error', body)}")
    return dict(body.get("data") or {})


def instant(base: str, query: str, at: datetime) -> list[tuple[dict[str, str], float]]:
    """An instant query evaluated at `at`: (labels, value) of each series, NaN results left out."""
    data = _get(base, "/api/v1/query", {"query": query, "time": f"{at.timestamp():.3f}"})
    rows = []
    for item in data.get("result", []):
        value = float(item["value"][1])
        if not math.isnan(value):
            rows.append((dict(item.get("metric", {})), value))
    return rows


def series(
    base: str, query: str, start: datetime, end: datetime, step_seconds: float
) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """A range query: (labels, [(unix time, value), ...]) of each series, NaN points left out."""
    params = {
        "query": query,
        "start": f"{start.timestamp():.3f}",
        "end": f"{end.timestamp():.3f}",
        "step": f"{step_seconds:g}",
    }
    data = _get(base, "/api/v1/query_range", params)
    rows = []
    for item in data.get("result", []):
        points = [(float(t), float(v)) for t, v in item.get("values", [])]
        rows.append((dict(item.get("metric", {})), [(t, v) for t, v in points if not math.isnan(v)]))
    return rows


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/-/ready", timeout=3) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


REALIZED_COMMON = "sluice_realized_rmspe_common"  # pushed by `sluice feedback` (pipelines/monitoring/export.py)


def pick_realized(rows: list[tuple[dict[str, str], float]], canary: str, stable: str) -> tuple[float, float] | None:
    """(canary, stable) from the newest feedback run that scored both versions on common store-days."""
    runs: dict[str, dict[str, float]] = {}
    for labels, value in rows:
        runs.setdefault(labels.get("feedback_run", ""), {})[labels.get("version", "")] = value
    both = sorted(run for run, versions in runs.items() if canary in versions and stable in versions)
    if not both:
        return None
    newest = runs[both[-1]]  # run labels are UTC stamps: the largest is the newest
    return newest[canary], newest[stable]


def realized(
    base: str, model: str, canary_version: str, stable_version: str, at: datetime
) -> tuple[float, float] | None:
    query = f'{REALIZED_COMMON}{{model="{model}",version=~"{canary_version}|{stable_version}"}}'
    return pick_realized(instant(base, query, at), canary_version, stable_version)


def gate_report(
    base: str, model: str, sel: Selector, start: datetime, end: datetime, paired: bool = False
) -> GateReport:
    """Each revision's requests, failures, p95 latency and mean prediction over [start, end]."""
    seconds = max(1, math.ceil((end - start).total_seconds()))
    rng = f"[{seconds}s]"
    match = f'model="{model}",{sel.label}=~"{sel.canary}|{sel.stable}"'
    by = f"sum by ({sel.label}"

    def per_revision(query: str) -> dict[str, float]:
        return {labels.get(sel.label, ""): value for labels, value in instant(base, query, end)}

    outcomes: dict[tuple[str, str], float] = {}
    for labels, value in instant(base, f"{by}, outcome) (increase({REQUESTS}{{{match}}}{rng}))", end):
        outcomes[(labels.get(sel.label, ""), labels.get("outcome", ""))] = value
    router_failures = per_revision(f'{by}) (increase({ROUTER}{{{match},code=~"5..|000"}}{rng}))')
    p95 = per_revision(f"histogram_quantile(0.95, {by}, le) (increase({LATENCY}{{{match}}}{rng})))")
    mean = per_revision(
        f"{by}) (increase({PREDICTION_SUM}{{{match}}}{rng})) / {by}) (increase({PREDICTION_COUNT}{{{match}}}{rng}))"
    )

    def window(rev: str) -> RevisionWindow:
        runtime = {o: v for (r, o), v in outcomes.items() if r == rev}
        gone = router_failures.get(rev, 0.0)  # never reached the runtime, so not in its counters
        return RevisionWindow(
            requests=sum(runtime.values()) + gone,
            server_errors=runtime.get("error", 0.0) + gone,
            client_errors=runtime.get("invalid", 0.0),
            p95_seconds=p95.get(rev),
            mean_prediction=mean.get(rev),
        )

    span = f"{start:%Y-%m-%dT%H:%M:%SZ} .. {end:%H:%M:%SZ} ({seconds} s) from {base}"
    paired_div, rows = None, 0.0
    if paired:
        canary_match = f'model="{model}",{sel.label}="{sel.canary}"'
        sums = instant(base, f"sum(increase({MIRROR_SUM}{{{canary_match}}}{rng}))", end)
        counts = instant(base, f"sum(increase({MIRROR_COUNT}{{{canary_match}}}{rng}))", end)
        rows = counts[0][1] if counts else 0.0
        if rows > 0 and sums:
            paired_div = sums[0][1] / rows
    return GateReport(window(sel.canary), window(sel.stable), span, paired_div, rows, paired)
