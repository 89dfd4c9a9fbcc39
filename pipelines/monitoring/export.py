"""Drift and realized-accuracy figures for Prometheus, pushed to a Pushgateway.

`sluice drift` and `sluice feedback` are batch jobs: nothing stays up for Prometheus to scrape, which
is the case the Pushgateway exists for. Each run replaces its group (job, model, version), so the
gateway holds the latest figures per version and Prometheus scrapes them from it (honor_labels).
No gateway configured (SLUICE_PUSHGATEWAY_URL / --pushgateway): nothing is pushed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

DRIFT_JOB = "sluice-drift"
FEEDBACK_JOB = "sluice-feedback"


@dataclass(frozen=True)
class DriftFigures:
    prediction_score: float
    unmatched_share: float
    drift_share: float
    drifted: bool
    compared_rows: int
    column_scores: Mapping[str, float]


def drift_registry(model: str, version: str, figures: DriftFigures, timestamp: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = {"model": model, "version": version}

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, list(labels), registry=registry).labels(**labels).set(value)

    gauge(
        "sluice_drift_prediction_score",
        "normed Wasserstein distance of predictions vs the reference",
        figures.prediction_score,
    )
    gauge(
        "sluice_drift_unmatched_share",
        "share of open rows in (DayOfWeek, Promo) cells the reference lacks, holiday weeks aside",
        figures.unmatched_share,
    )
    gauge("sluice_drift_share", "share of scored input columns over their drift threshold", figures.drift_share)
    gauge("sluice_drift_detected", "1 when the last drift check found drift", 1.0 if figures.drifted else 0.0)
    gauge("sluice_drift_compared_rows", "logged open rows the last drift check compared", figures.compared_rows)
    gauge("sluice_drift_last_run_timestamp_seconds", "when the last drift check ran", timestamp)
    column = Gauge(
        "sluice_drift_column_score", "drift score per column (Jensen-Shannon; prediction: Wasserstein)",
        [*labels, "column"], registry=registry,
    )  # fmt: skip
    for name, score in figures.column_scores.items():
        column.labels(**labels, column=name).set(score)
    return registry


@dataclass(frozen=True)
class FeedbackFigures:
    rmspe: float
    rows: int
    common_rmspe: float  # on the store-days every version of the run predicted (nan: none)
    common_rows: int
    run: str  # which `sluice feedback` run: common figures compare only within one


def feedback_registry(model: str, version: str, figures: FeedbackFigures, timestamp: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = {"model": model, "version": version}
    rmspe, rows = figures.rmspe, figures.rows
    Gauge("sluice_realized_rmspe", "RMSPE of logged predictions against actual sales (open days, Sales > 0)",
          list(labels), registry=registry).labels(**labels).set(rmspe)  # fmt: skip
    Gauge("sluice_realized_rows", "store-days with actuals behind sluice_realized_rmspe",
          list(labels), registry=registry).labels(**labels).set(rows)  # fmt: skip
    Gauge("sluice_feedback_last_run_timestamp_seconds", "when realized accuracy was last computed",
          list(labels), registry=registry).labels(**labels).set(timestamp)  # fmt: skip
    if figures.common_rows > 0:
        # Labelled with the run: a version absent from a later run keeps its old group on the gateway,
        # and must not be compared with figures computed on other store-days.
        run_labels = {**labels, "feedback_run": figures.run}
        Gauge("sluice_realized_rmspe_common", "realized RMSPE on the store-days every version of the run predicted",
              list(run_labels), registry=registry).labels(**run_labels).set(figures.common_rmspe)  # fmt: skip
        Gauge("sluice_realized_common_rows", "store-days behind sluice_realized_rmspe_common",
              list(run_labels), registry=registry).labels(**run_labels).set(figures.common_rows)  # fmt: skip
    return registry


def push(gateway: str, job: str, model: str, version: str, registry: CollectorRegistry) -> None:
    """Replace the group (job, model, version) on the gateway; raises OSError when it is unreachable."""
    push_to_gateway(gateway, job=job, registry=registry, grouping_key={"model": model, "version": version}, timeout=10)
