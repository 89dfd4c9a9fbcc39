"""Prometheus metrics of the runtime, labelled by model and version so a canary compares with stable.

Each ServingMetrics owns a private CollectorRegistry: two models built in one process (tests do
this) never collide on metric names. The server exposes one of them through KServe's own `/metrics`
route, which serves prometheus_client's global REGISTRY, by registering the private registry there
as a collector (`expose`), instead of running a second metrics endpoint.

With several worker processes (`python -m serving --workers N`, serving.workers) the metrics use
prometheus_client's multiprocess mode: every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR, and whichever process answers `/metrics` sums them all
(`multiprocess_registry`), so a scrape sees the pod's totals, not one process's share.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from serving.workers import MULTIPROC_ENV

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
        self.values = Histogram(
            "sluice_prediction_value",
            "Distribution of predicted values.",
            labels,
            buckets=value_buckets,
            registry=self.registry,
        )
        self._value_bounds = np.asarray(sorted(float(b) for b in value_buckets), dtype=np.float64)
        self.info = Gauge(
            "sluice_model_info",
            "1 for the model version this process serves; labels carry its provenance.",
            [*labels, "run_id", "model_uuid"],
            registry=self.registry,
            multiprocess_mode="max",  # one series per pod, not one per worker process
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
            values=ArraySeries(self.values.labels(model, version, rev), self._value_bounds),
        )

    def expose(self, target: CollectorRegistry = REGISTRY) -> None:
        """Make these metrics part of `target` (default: the registry KServe's /metrics serves).

        In multiprocess mode there is nothing to register: the values live in files, and
        `multiprocess_registry` reads them for `/metrics`.
        """
        if multiprocess_dir() is not None:
            return
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
    values: ArraySeries

    def observe_request(self, outcome: str, seconds: float | None) -> None:
        """`seconds` None: rejected before reaching the model, so there is no latency to record."""
        self.outcomes[outcome].inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def observe_predictions(self, values: np.ndarray) -> None:
        self.rows.inc(len(values))
        self.values.observe(values)


class ArraySeries:
    """One histogram series fed whole prediction arrays at once.

    prometheus_client's `observe` takes a lock per value: about 2 ms per 1,000-row request. This
    counts the array into the buckets with numpy and adds each bucket's count once. It writes the
    histogram's own per-bucket values (prometheus_client keeps them non-cumulative, as here), so
    the series is a plain Histogram's: exposed as one, and summed across processes in
    multiprocess mode.
    """

    def __init__(self, child: Histogram, bounds: np.ndarray):
        self._buckets = child._buckets  # private: pinned prometheus-client (uv.lock), unit-tested
        self._sum = child._sum
        self._bounds = bounds
        if len(self._buckets) != len(bounds) + 1:
            raise ValueError(f"histogram has {len(self._buckets)} buckets, expected {len(bounds) + 1}")

    def observe(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        # side="left": a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        counts = np.bincount(np.searchsorted(self._bounds, finite, side="left"), minlength=len(self._buckets))
        for i in np.flatnonzero(counts):
            self._buckets[i].inc(float(counts[i]))
        self._sum.inc(float(finite.sum()))


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when this process runs as one of several workers."""
    return os.environ.get(MULTIPROC_ENV) or None


def multiprocess_registry() -> CollectorRegistry:
    """A registry that sums every worker's files (prometheus_client's documented multiprocess setup)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry
