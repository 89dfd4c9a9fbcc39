"""Prometheus metrics of the runtime, labelled by model and version so a canary compares with stable.

Each ServingMetrics owns a private CollectorRegistry: two models built in one process (tests do
this) never collide on metric names. The server exposes one of them through KServe's own `/metrics`
route, which serves prometheus_client's global REGISTRY, by registering the private registry there
as a collector (`expose`), instead of running a second metrics endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Latency of one inference call; the runtime targets p99 < 20 ms at 1 row, p50 < 50 ms at 1,000.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)
# Predicted values: daily store sales; closed days predict 0, hence the 0 bucket.
VALUE_BUCKETS = (0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12500, 15000, 20000, 30000)
OUTCOMES = ("ok", "invalid", "error")


class ServingMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        value_buckets: Sequence[float] = VALUE_BUCKETS,
        revision: str = "",
    ):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # The Knative revision (K_REVISION in a pod): the rollout gates compare canary and stable by it,
        # which also tells apart two revisions of the same version (a resource change).
        self.revision = revision
        labels = ["model", "version", "revision"]
        self.requests = Counter(
            "sluice_inference_requests",
            "Inference requests by outcome: ok, invalid (400) or error (500).",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_inference_duration_seconds",
            "Time from decoded request to encoded response, all outcomes.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "sluice_predicted_rows", "Rows predicted (successful requests only).", labels, registry=self.registry
        )
        self.values = ArrayHistogram(
            "sluice_prediction_value",
            "Distribution of predicted values.",
            labels,
            buckets=value_buckets,
            registry=self.registry,
        )
        self.info = Gauge(
            "sluice_model_info",
            "1 for the model version this process serves; labels carry its provenance.",
            [*labels, "run_id", "model_uuid"],
            registry=self.registry,
        )
        self._exposed_in: CollectorRegistry | None = None

    def bind(self, model: str, version: str, run_id: str = "", model_uuid: str = "") -> BoundMetrics:
        """Label children for one model version, created once so the hot path does no label lookups."""
        rev = self.revision
        self.info.labels(model, version, rev, run_id, model_uuid).set(1)
        # Create every outcome series up front: a rate() over a series that appears late misses its
        # first increments, and a canary comparison needs `invalid`/`error` to exist at 0.
        outcomes = {o: self.requests.labels(model, version, rev, o) for o in OUTCOMES}
        return BoundMetrics(
            outcomes=outcomes,
            latency=self.latency.labels(model, version, rev),
            rows=self.rows.labels(model, version, rev),
            values=self.values.series(model, version, rev),
        )

    def expose(self, target: CollectorRegistry = REGISTRY) -> None:
        """Make these metrics part of `target` (default: the registry KServe's /metrics serves)."""
        if self._exposed_in is None:
            target.register(self.registry)  # type: ignore[arg-type]  # a registry is a collector
            self._exposed_in = target

    def unexpose(self) -> None:
        if self._exposed_in is not None:
            self._exposed_in.unregister(self.registry)  # type: ignore[arg-type]
            self._exposed_in = None


@dataclass(frozen=True)
class BoundMetrics:
    outcomes: dict[str, Counter]
    latency: Histogram
    rows: Counter
    values: _ArraySeries

    def observe_request(self, outcome: str, seconds: float | None) -> None:
        """`seconds` None: rejected before reaching the model, so there is no latency to record."""
        self.outcomes[outcome].inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def observe_predictions(self, values: np.ndarray) -> None:
        self.rows.inc(len(values))
        self.values.observe(values)


class _ArraySeries:
    def __init__(self, bounds: np.ndarray):
        self._bounds = bounds
        self._lock = threading.Lock()
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last slot: +Inf
        self.total = 0.0

    def observe(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        # side="left": a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        counts = np.bincount(np.searchsorted(self._bounds, finite, side="left"), minlength=len(self.counts))
        with self._lock:
            self.counts += counts
            self.total += float(finite.sum())

    def snapshot(self) -> tuple[np.ndarray, float]:
        with self._lock:
            return self.counts.copy(), self.total


class ArrayHistogram(Collector):
    """A histogram fed whole prediction arrays at once.

    prometheus_client's Histogram takes a lock per observation: about 2 ms per 1,000-row request.
    This does one numpy pass per request and exposes the same histogram series.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self._name, self._doc, self._labelnames = name, documentation, list(labelnames)
        self._bounds = np.asarray(sorted(float(b) for b in buckets), dtype=np.float64)
        self._series: dict[tuple[str, ...], _ArraySeries] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def series(self, *labelvalues: str) -> _ArraySeries:
        with self._lock:
            return self._series.setdefault(tuple(labelvalues), _ArraySeries(self._bounds))

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            items = list(self._series.items())
        for labelvalues, series in items:
            counts, total = series.snapshot()
            cumulative = np.cumsum(counts)
            buckets = [(floatToGoString(b), float(c)) for b, c in zip(self._bounds, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labelvalues), buckets, total)
        yield family
