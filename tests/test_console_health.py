"""The Model health panel against a real MLflow store (a local SQLite store, no server): what `sluice
drift` and `sluice feedback` log on a version's run is what the page shows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipelines.config import Settings
from pipelines.console.app import create_app
from pipelines.console.health import gather_health

MODEL = "shop"


@pytest.fixture
def store(tmp_path: Path, tmp_settings: Settings) -> tuple[Settings, str]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("health", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment).info.run_id
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, str(tmp_path / "artifacts" / "m"), run_id=run)
    # As `sluice drift` logs it: metrics with their history, the report under drift/<stamp>/.
    report = tmp_path / "drift-shop-v1.html"
    report.write_text("<html><body><h1>evidently drift report</h1></body></html>")
    client.log_artifact(run, str(report), "drift/20261130T070000Z")
    client.log_batch(
        run,
        metrics=[
            Metric("drift_detected", 0.0, 1_000, 0),
            Metric("drift_detected", 1.0, 2_000, 0),
            Metric("drift_prediction_score", 0.31, 2_000, 0),
            Metric("drift_unmatched_share", 0.166, 2_000, 0),
            Metric("realized_rmspe", 0.12, 1_000, 0),
            Metric("realized_rmspe", 0.10, 3_000, 0),
            Metric("realized_rmspe_daily", 0.2, 86_400_000, 0),
            Metric("realized_rmspe_daily", 0.08, 2 * 86_400_000, 0),
        ],
    )
    return dataclasses.replace(tmp_settings, tracking_uri=uri), run


def test_health_reads_the_latest_check_and_the_realized_history(store: tuple[Settings, str]) -> None:
    settings, run = store
    health = gather_health(settings.tracking_uri, MODEL)
    assert health.error is None and [v.version for v in health.versions] == ["1"]
    v = health.versions[0]
    assert v.drift_detected is True and v.prediction_score == pytest.approx(0.31)
    assert v.unmatched_share == pytest.approx(0.166)
    assert [r for _, r in v.realized] == [0.12, 0.10]  # oldest first
    assert [(t.day, r) for t, r in v.daily] == [(2, 0.2), (3, 0.08)]  # per sales day, oldest first
    assert v.report == "drift/20261130T070000Z/drift-shop-v1.html"

    app = TestClient(create_app(settings))
    page = app.get("/health", params={"model": MODEL})
    assert page.status_code == 200
    assert 'data-version="1"' in page.text and ">drift<" in page.text and "0.1000" in page.text
    assert "chart-realized" in page.text
    report = app.get("/health/report", params={"run": run, "path": v.report})
    assert report.status_code == 200 and "evidently drift report" in report.text
    refused = app.get("/health/report", params={"run": run, "path": "../../etc/passwd"})
    assert refused.status_code == 400 and refused.text.startswith("path:")


def test_mlflow_down_is_a_panel_message(tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one refused connection, not minutes of retries
    settings = dataclasses.replace(tmp_settings, tracking_uri="http://127.0.0.1:1")
    page = TestClient(create_app(settings)).get("/health")
    assert page.status_code == 200 and 'id="health-down"' in page.text
    assert TestClient(create_app(settings)).get("/health", params={"model": "Bad Name"}).status_code == 400
