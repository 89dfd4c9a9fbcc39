"""Read the runtime's per-version serving metrics: from a runtime's /metrics text or from Prometheus.

Both sources produce the same MetricsSnapshot: for each model version, cumulative counters (requests
by outcome, the latency histogram, the sum and count of predicted values), exactly the series
serving/metrics.py exports. Counters are cumulative since the process started, so the rollout gates
work on the difference between two snapshots (`VersionMetrics.since`); the earlier snapshot is stored
in the decision commit's trailer.

- A runtime URL (path ends in /metrics): one process, e.g. `sluice serve --gitops` on a laptop,
  which serves stable and canary in one process and labels each series with its version.
- A Prometheus base URL (anything else; or env PROMETHEUS_URL): the HTTP API `/api/v1/query`,
  summing each series over pods with `sum by (version, ...)`.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REQUESTS = "sluice_inference_requests"
LATENCY = "sluice_inference_duration_seconds"
PREDICTIONS = "sluice_prediction_value"
FAILED_OUTCOMES = ("invalid", "error")
TIMEOUT = 10.0


class MetricsError(RuntimeError):
    """The metrics could not be read; the message names the URL and the cause."""


@dataclass(frozen=True)
class VersionMetrics:
    """Cumulative serving counters of one model version (summed over its processes)."""

    requests: Mapping[str, float] = field(default_factory=dict)  # outcome -> count
    latency_buckets: tuple[tuple[float, float], ...] = ()  # (upper bound `le`, cumulative count), +Inf last
    prediction_sum: float = 0.0
    prediction_count: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(self.requests.values()))

    @property
    def failed(self) -> float:
        return float(sum(self.requests.get(o, 0.0) for o in FAILED_OUTCOMES))

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.total if self.total > 0 else None

    @property
    def mean_prediction(self) -> float | None:
        return self.prediction_sum / self.prediction_count if self.prediction_count > 0 else None

    def latency_quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.latency_buckets)

    def since(self, earlier: VersionMetrics | None) -> VersionMetrics:
        """The increase since `earlier`. A counter that went down means the process restarted (or a
        pod went away): then the current values are all we know, and they are returned unchanged."""
        if earlier is None:
            return self
        requests = {k: v - earlier.requests.get(k, 0.0) for k, v in self.requests.items()}
        bounds_now = [b for b, _ in self.latency_buckets]
        bounds_then = [b for b, _ in earlier.latency_buckets]
        buckets: tuple[tuple[float, float], ...] = self.latency_buckets
        if earlier.latency_buckets:
            if bounds_now != bounds_then:
                return self
            buckets = tuple(
                (b, c - c0) for (b, c), (_, c0) in zip(self.latency_buckets, earlier.latency_buckets, strict=True)
            )
        pred_count = self.prediction_count - earlier.prediction_count
        values = [*requests.values(), *(c for _, c in buckets), pred_count]
        if any(v < 0 for v in values) or any(k not in self.requests for k in earlier.requests):
            return self
        return VersionMetrics(requests, buckets, self.prediction_sum - earlier.prediction_sum, pred_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "r": {k: _num(v) for k, v in sorted(self.requests.items())},
            "l": [[_bound(b), _num(c)] for b, c in self.latency_buckets],
            "ps": _num(self.prediction_sum),
            "pc": _num(self.prediction_count),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionMetrics:
        return cls(
            requests={str(k): float(v) for k, v in data.get("r", {}).items()},
            latency_buckets=tuple((float(b), float(c)) for b, c in data.get("l", [])),
            prediction_sum=float(data.get("ps", 0.0)),
            prediction_count=float(data.get("pc", 0.0)),
        )


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 6)


def _bound(b: float) -> float | str:
    return "+Inf" if math.isinf(b) else b


@dataclass(frozen=True)
class MetricsSnapshot:
    """Per-version counters of one model at one moment; `source` says where they were read."""

    versions: Mapping[str, VersionMetrics]
    source: str = ""

    def get(self, version: str | None) -> VersionMetrics:
        return self.versions.get(version or "", VersionMetrics())

    def to_trailer(self, keep: set[str] | None = None) -> str:
        data = {v: m.to_json() for v, m in sorted(self.versions.items()) if keep is None or v in keep}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_trailer(cls, text: str) -> MetricsSnapshot | None:
        try:
            data = json.loads(text)
            return cls({str(v): VersionMetrics.from_json(m) for v, m in data.items()}, "trailer")
        except (ValueError, TypeError, AttributeError):
            return None


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus-style quantile from cumulative buckets, linear within a bucket.

    None without observations. A quantile in the +Inf bucket is +inf: all we know is that it exceeds
    the largest finite bound, and a latency gate must treat that as a breach.
    """
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return math.inf


class _Acc:
    def __init__(self) -> None:
        self.requests: dict[str, float] = {}
        self.buckets: dict[float, float] = {}
        self.pred_sum = 0.0
        self.pred_count = 0.0

    def freeze(self) -> VersionMetrics:
        return VersionMetrics(dict(self.requests), tuple(sorted(self.buckets.items())), self.pred_sum, self.pred_count)


def parse_exposition(text: str, model: str, source: str = "") -> MetricsSnapshot:
    """Per-version counters of `model` from Prometheus text exposition (a runtime's /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    acc: dict[str, _Acc] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUESTS, LATENCY, PREDICTIONS):
            continue
        for s in family.samples:
            if s.labels.get("model") != model or "version" not in s.labels:
                continue
            a = acc.setdefault(s.labels["version"], _Acc())
            if s.name == REQUESTS + "_total":
                outcome = s.labels.get("outcome", "ok")
                a.requests[outcome] = a.requests.get(outcome, 0.0) + s.value
            elif s.name == LATENCY + "_bucket":
                le = float(s.labels["le"])
                a.buckets[le] = a.buckets.get(le, 0.0) + s.value
            elif s.name == PREDICTIONS + "_sum":
                a.pred_sum += s.value
            elif s.name == PREDICTIONS + "_count":
                a.pred_count += s.value
    return MetricsSnapshot({v: a.freeze() for v, a in acc.items()}, source)


def _http_get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "text/plain, application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return bytes(resp.read())
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise MetricsError(f"cannot read metrics from {url}: {exc}") from exc


def _prom_query(base: str, query: str) -> list[dict[str, Any]]:
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        body = json.loads(_http_get(url))
    except ValueError as exc:
        raise MetricsError(f"{base}: not a Prometheus API answer to {query!r}") from exc
    if body.get("status") != "success":
        raise MetricsError(f"{base}: query {query!r} failed: {body.get('error', body)}")
    result = body.get("data", {}).get("result", [])
    return list(result) if isinstance(result, list) else []


def query_prometheus(base: str, model: str) -> MetricsSnapshot:
    """Per-version counters of `model` from the Prometheus HTTP API, summed over pods."""
    sel = f'{{model="{model}"}}'
    acc: dict[str, _Acc] = {}

    def each(query: str) -> list[tuple[dict[str, str], float]]:
        rows = []
        for item in _prom_query(base, query):
            labels = item.get("metric", {})
            if "version" in labels:
                rows.append((labels, float(item["value"][1])))
        return rows

    for labels, value in each(f"sum by (version, outcome) ({REQUESTS}_total{sel})"):
        acc.setdefault(labels["version"], _Acc()).requests[labels.get("outcome", "ok")] = value
    for labels, value in each(f"sum by (version, le) ({LATENCY}_bucket{sel})"):
        acc.setdefault(labels["version"], _Acc()).buckets[float(labels["le"])] = value
    for labels, value in each(f"sum by (version) ({PREDICTIONS}_sum{sel})"):
        acc.setdefault(labels["version"], _Acc()).pred_sum = value
    for labels, value in each(f"sum by (version) ({PREDICTIONS}_count{sel})"):
        acc.setdefault(labels["version"], _Acc()).pred_count = value
    return MetricsSnapshot({v: a.freeze() for v, a in acc.items()}, f"prometheus {base}")


def is_runtime_url(url: str) -> bool:
    return urllib.parse.urlparse(url).path.rstrip("/").endswith("/metrics")


def read_metrics(model: str, url: str | None = None, env: Mapping[str, str] | None = None) -> MetricsSnapshot:
    """Read from `url` (runtime /metrics or Prometheus base URL), else $PROMETHEUS_URL."""
    e = os.environ if env is None else env
    target = url or e.get("PROMETHEUS_URL") or ""
    if not target:
        raise MetricsError(
            "no metrics source: pass --metrics-url (a runtime's http://host:port/metrics, or a Prometheus "
            "base URL) or set PROMETHEUS_URL"
        )
    if is_runtime_url(target):
        return parse_exposition(_http_get(target).decode("utf-8", "replace"), model, target)
    return query_prometheus(target, model)
