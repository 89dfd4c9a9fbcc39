"""Prometheus metrics of the receiver, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TYPES = ("request", "response")
# accepted: logged; duplicate: a ce-id and type already logged (200, not stored again); invalid: 4xx;
# rejected: 503, the spool is full or cannot be written (not acknowledged: the sender may retry).
OUTCOMES = ("accepted", "duplicate", "invalid", "rejected")


class LogMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "sluice_inference_log_events",
            "Payload-logger events received, by type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        for t in TYPES:
            for outcome in OUTCOMES:
                self.events.labels(t, outcome)
        self.events.labels("unknown", "invalid")
        self.rows_written = Counter(
            "sluice_inference_log_rows_written", "Rows uploaded to S3 as Parquet, by model.", ["model"], registry=r
        )
        self.files_written = Counter("sluice_inference_log_files_written", "Parquet files uploaded to S3.", registry=r)
        self.upload_failures = Counter(
            "sluice_inference_log_upload_failures",
            "Failed uploads to S3 (each file stays in the spool and is retried).",
            registry=r,
        )
        self.unpaired = Counter(
            "sluice_inference_log_unpaired",
            "Records stored without their partner (the pair timeout passed), by the half that came.",
            ["type"],
            registry=r,
        )
        for t in TYPES:
            self.unpaired.labels(t)
        self.flush_seconds = Histogram(
            "sluice_inference_log_flush_seconds",
            "Time to write one flush's Parquet files and commit them to the spool.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.spool_bytes = Gauge(
            "sluice_inference_log_spool_bytes",
            "Bytes on local disk: write-ahead log plus files not yet uploaded.",
            registry=r,
        )
        self.spool_files = Gauge(
            "sluice_inference_log_spool_files", "Parquet files waiting for their upload.", registry=r
        )
        self.pending = Gauge("sluice_inference_log_pending", "Halves waiting for their partner (by ce-id).", registry=r)

    def watch(
        self, spool_bytes: Callable[[], float], spool_files: Callable[[], float], pending: Callable[[], float]
    ) -> None:
        """Gauges read at scrape time, so the hot path never updates them."""
        self.spool_bytes.set_function(spool_bytes)
        self.spool_files.set_function(spool_files)
        self.pending.set_function(pending)
