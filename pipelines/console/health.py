"""The Model health panel's data: per registered version, the latest drift check and the realized RMSPE
over time, as `sluice drift` and `sluice feedback` record them on the version's MLflow run.

Nothing here computes drift or accuracy: it reads what those commands logged (metrics with their
history, and the report files under `drift/<stamp>/`), so the page shows what CI and people ran.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DRIFT_DIR = "drift"
REALIZED = "realized_rmspe"
REALIZED_DAILY = "realized_rmspe_daily"  # one point per sales day, at that day's time


@dataclass(frozen=True)
class VersionHealth:
    version: str
    run_id: str
    drift_checked: datetime | None = None
    drift_detected: bool | None = None
    prediction_score: float | None = None
    unmatched_share: float | None = None
    report: str | None = None  # artifact path of the latest drift report's HTML
    realized: list[tuple[datetime, float]] = field(default_factory=list)  # each feedback run's RMSPE
    daily: list[tuple[datetime, float]] = field(default_factory=list)  # RMSPE per sales day


@dataclass(frozen=True)
class Health:
    model: str
    versions: list[VersionHealth]
    error: str | None = None


def mlflow_client(tracking_uri: str) -> Any:
    """The console's MLflow client (tracking and registry at one URI)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def gather_health(tracking_uri: str, model: str, client: Any = None, newest: int = 6) -> Health:
    """The `newest` versions of `model` (newest first); MLflow down becomes `error`."""
    try:
        client = client or mlflow_client(tracking_uri)
        versions = sorted(client.search_model_versions(f"name='{model}'"), key=lambda v: -int(v.version))[:newest]
        return Health(model, [_version(client, str(v.version), v.run_id) for v in versions if v.run_id])
    except Exception as exc:  # MLflow's client raises its own and requests' exceptions
        return Health(model, [], error=f"MLflow at {tracking_uri} did not answer: {type(exc).__name__}: {exc}")


def _version(client: Any, version: str, run_id: str) -> VersionHealth:
    metrics = {m: client.get_metric_history(run_id, m) for m in ("drift_detected", "drift_prediction_score")}
    latest = {name: max(hist, key=lambda m: m.timestamp) for name, hist in metrics.items() if hist}
    unmatched = client.get_metric_history(run_id, "drift_unmatched_share")
    realized = sorted((_when(m.timestamp), float(m.value)) for m in client.get_metric_history(run_id, REALIZED))
    # A day scored by several feedback runs: one point (MLflow does not order equal timestamps).
    by_day = {_when(m.timestamp): float(m.value) for m in client.get_metric_history(run_id, REALIZED_DAILY)}
    try:
        report = _latest_report(client, run_id)
    except Exception:  # the artifacts live in S3: S3 down hides the report link, not the figures
        report = None
    detected = latest.get("drift_detected")
    score = latest.get("drift_prediction_score")
    return VersionHealth(
        version=version,
        run_id=run_id,
        drift_checked=_when(detected.timestamp) if detected else None,
        drift_detected=bool(detected.value) if detected else None,
        prediction_score=float(score.value) if score else None,
        unmatched_share=float(max(unmatched, key=lambda m: m.timestamp).value) if unmatched else None,
        report=report,
        realized=realized,
        daily=sorted(by_day.items()),
    )


def _latest_report(client: Any, run_id: str) -> str | None:
    stamps = sorted(a.path for a in client.list_artifacts(run_id, DRIFT_DIR) if a.is_dir)
    if not stamps:
        return None
    html = [a.path for a in client.list_artifacts(run_id, stamps[-1]) if a.path.endswith(".html")]
    return html[0] if html else None


def report_html(tracking_uri: str, run_id: str, path: str, client: Any = None) -> bytes:
    """The drift report's HTML, downloaded from the run's artifacts."""
    if not path.startswith(f"{DRIFT_DIR}/") or ".." in path or not path.endswith(".html"):
        raise ValueError(f"not a drift report: {path!r}")
    client = client or mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="sluice-console-") as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_bytes()
