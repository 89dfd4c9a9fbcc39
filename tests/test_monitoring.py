"""`sluice drift` against real LocalStack S3 and MLflow: traffic logged in the receiver's layout,
a version with a reference sample, reports on disk and on the run, figures on a real Pushgateway."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from monitoring_helpers import post_log, traffic, write_log

from model import reference
from pipelines.cli import main
from pipelines.config import Settings
from pipelines.registry import s3_client
from serving.inference_log.reader import read_log

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = traffic("2015-06-01", 42, seed=1).assign(Sales=0)


def register(model: str, with_reference: bool = True) -> tuple[str, str]:
    """A version whose run carries `REFERENCE` like a trained one does (without fitting a model)."""
    mlflow.set_experiment("sluice-monitoring-test")
    with mlflow.start_run() as run:
        mlflow.log_dict({"model": "stand-in"}, "model/MLmodel.json")
        if with_reference:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(reference.save(REFERENCE, Path(tmp))), reference.ARTIFACT_DIR)
    client = MlflowClient()
    with contextlib.suppress(Exception):
        client.create_registered_model(model)
    mv = client.create_model_version(model, f"{run.info.artifact_uri}/model", run.info.run_id)
    if with_reference:
        client.set_model_version_tag(model, mv.version, reference.REFERENCE_TAG, reference.ARTIFACT_PATH)
    return str(mv.version), run.info.run_id


@pytest.fixture
def sluice_env(platform_env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The env that makes in-process `sluice` commands see the test platform."""
    s = platform_env
    env = {
        "SLUICE_STATE_DIR": str(tmp_path / "state"),
        "SLUICE_S3_HOST": s.s3_host,
        "SLUICE_S3_PORT": str(s.s3_port),
        "SLUICE_MLFLOW_HOST": s.mlflow_host,
        "SLUICE_MLFLOW_PORT": str(s.mlflow_port),
        "SLUICE_DATA_BUCKET": s.data_bucket,
        "SLUICE_PUSHGATEWAY_URL": "",
        "SLUICE_PUSHGATEWAY_PORT": str(s.pushgateway_port),  # the platform's gateway, never another one
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return s


def sluice(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()  # what came before (MLflow prints run links) is not the command's output
    code = main(list(args))
    return code, capsys.readouterr().out


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway binary (apt-get install prometheus-pushgateway)")
    from conftest import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "pushgateway.log").open("wb") as log:
        # An empty persistence file: in memory only (Debian's default file is shared by every gateway).
        args = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
        proc = subprocess.Popen(args, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "the Pushgateway did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_drift_quiet_on_ordinary_weeks_and_loud_on_shifts(
    sluice_env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, pushgateway: str
) -> None:
    model = "drift-it"
    version, run_id = register(model)
    s3 = s3_client(sluice_env)
    now = datetime.now(UTC).replace(microsecond=0)
    day = timedelta(days=1)
    # Three windows a day apart: an ordinary week (a promo week: its mix is not the reference's),
    # the same week at a 15% higher sales level, and promotions moved to Thursday..Saturday.
    write_log(s3, sluice_env.data_bucket, model, version, traffic("2015-07-20", 7, seed=7), now - 3 * day)
    shifted = traffic("2015-07-20", 7, seed=8)
    write_log(
        s3,
        sluice_env.data_bucket,
        model,
        version,
        shifted.assign(prediction=shifted["prediction"] * 1.15),
        now - 2 * day,
    )
    write_log(
        s3, sluice_env.data_bucket, model, version, traffic("2015-07-20", 7, seed=9, promo_weekday={4, 5, 6}), now - day
    )

    def window(days_ago: int) -> list[str]:
        start = now - days_ago * day - timedelta(hours=1)
        return ["--since", start.isoformat(), "--until", (start + timedelta(hours=2)).isoformat()]

    out = tmp_path / "reports"
    common = ["drift", "--model", model, "--version", version, "--out", str(out), "--fail-on-drift"]
    code, text = sluice(capsys, *common, *window(3), "--pushgateway", pushgateway)
    assert code == 0, text
    assert text.startswith(f"no drift: {model} v{version}") and "280 logged rows, 240 open, 240 compared" in text
    html = next(out.glob("*.html"))
    assert f"report: {html}" in text and html.stat().st_size > 10_000
    assert len(list(out.glob("*.json"))) == 2  # evidently's JSON and the summary
    # On the Pushgateway, for Prometheus to scrape.
    metrics = httpx.get(f"{pushgateway}/metrics").text
    assert f'sluice_drift_detected{{instance="",job="sluice-drift",model="{model}",version="{version}"}} 0' in metrics

    code, text = sluice(capsys, *common, *window(2))
    assert code == 1 and text.startswith("DRIFT") and "prediction distance" in text.split("drift:", 1)[1]
    code, text = sluice(capsys, *common, *window(1))
    assert code == 1 and "cells the reference lacks" in text
    # Without --fail-on-drift the verdict is printed and the exit is 0.
    code, text = sluice(capsys, *common[:-1], *window(1))
    assert code == 0 and text.startswith("DRIFT")

    # Each check left its report and figures on the version's run.
    client = MlflowClient()
    checks = client.list_artifacts(run_id, "drift")
    assert len(checks) >= 3
    names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, checks[0].path)}
    assert {n.rsplit(".", 1)[-1] for n in names} == {"html", "json"} and len(names) == 3
    history = client.get_metric_history(run_id, "drift_detected")
    assert sorted(m.value for m in history)[-1] == 1.0 and len(history) >= 3


@pytest.mark.integration
def test_drift_alert_fires_in_the_embedded_prometheus(sluice_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Events -> the platform's receiver -> Parquet in S3 -> sluice drift -> its Pushgateway -> its
    Prometheus (scraping it) -> SluiceDrift firing."""
    from pipelines.platform import pushgateway

    if not pushgateway.healthy(sluice_env) or not httpx.get(f"{sluice_env.metrics_url}/-/ready").is_success:
        pytest.skip("the platform runs no Pushgateway or Prometheus here (make setup installs them)")
    model = "drift-alert-it"
    version, _ = register(model)
    week = traffic("2015-07-20", 7, seed=31)
    shifted = week.assign(prediction=week["prediction"] * 1.2)
    assert post_log(sluice_env.inference_log_url, model, version, shifted, batch=100) == 6
    deadline = time.monotonic() + 60  # the receiver flushes every 2 s in tests (conftest)
    while len(read_log(s3_client(sluice_env), sluice_env.data_bucket, model, version)) < len(week):
        assert time.monotonic() < deadline, "the receiver did not store the events in 60 s"
        time.sleep(1)
    code, text = sluice(capsys, "drift", "--model", model, "--version", version)
    assert code == 0 and text.startswith("DRIFT"), text
    assert f"pushed to the Pushgateway at {sluice_env.embedded_pushgateway_url}" in text

    def firing() -> list[dict[str, Any]]:
        query = f'ALERTS{{alertname="SluiceDrift",alertstate="firing",model="{model}"}}'
        got = httpx.get(f"{sluice_env.metrics_url}/api/v1/query", params={"query": query}).json()
        return list(got["data"]["result"])

    deadline = time.monotonic() + 60
    while not (alerts := firing()):
        assert time.monotonic() < deadline, "SluiceDrift did not fire within 60 s"
        time.sleep(1)
    assert alerts[0]["metric"]["version"] == version and alerts[0]["metric"]["severity"] == "warning"


@pytest.mark.integration
def test_drift_says_what_to_do_when_there_is_nothing_to_compare(
    sluice_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    model = "drift-it-empty"
    version, _ = register(model)
    code, text = sluice(
        capsys, "drift", "--model", model, "--version", version, "--since", "2020-01-01", "--until", "2020-01-02"
    )
    assert code == 2 and text.startswith(f"error: no traffic of {model} v{version} logged") and "widen" in text
    code, text = sluice(capsys, "drift", "--model", model, "--version", "99")
    assert code == 2 and "versions [" in text

    # A version trained before reference samples existed: through the real CLI, no traceback.
    old, _ = register(model, with_reference=False)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "drift", "--model", model, "--version", old],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "has no reference sample" in proc.stdout and "sluice train" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.integration
def test_feedback_realized_rmspe_per_version_logged_to_mlflow(
    sluice_env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, pushgateway: str
) -> None:
    model = "feedback-it"
    stable, stable_run = register(model)
    canary, _ = register(model)
    s3 = s3_client(sluice_env)
    days = traffic("2015-07-20", 7, seed=21)
    part = days.sample(frac=0.25, random_state=2)
    write_log(s3, sluice_env.data_bucket, model, stable, days)
    write_log(s3, sluice_env.data_bucket, model, canary, part.assign(prediction=part["prediction"] * 1.1))
    rng = np.random.default_rng(5)
    sales = (days["prediction"] * rng.lognormal(0, 0.08, len(days))).round().astype(int)
    actuals = days[["Store", "Date"]].assign(Sales=sales)
    # From S3, as a nightly export would land.
    buffer = actuals.to_csv(index=False).encode()
    s3.put_object(Bucket=sluice_env.data_bucket, Key="actuals/2015-07-26.csv", Body=buffer)

    code, text = sluice(
        capsys, "feedback", "--model", model, "--actuals", f"s3://{sluice_env.data_bucket}/actuals/2015-07-26.csv",
        "--out", str(tmp_path), "--pushgateway", pushgateway,
    )  # fmt: skip
    assert code == 0, text
    open_days = sales > 0
    t, p = sales[open_days].to_numpy(float), days.loc[open_days, "prediction"].to_numpy()
    expected = float(np.sqrt(np.mean(((t - p) / t) ** 2)))
    line = next(line.split() for line in text.splitlines() if line.split()[:1] == [stable])
    assert float(line[1]) == pytest.approx(expected, abs=5e-5) and line[2] == f"{int(open_days.sum()):,}"
    history = MlflowClient().get_metric_history(stable_run, "realized_rmspe")
    assert history[-1].value == pytest.approx(expected, rel=1e-9)
    daily = MlflowClient().get_metric_history(stable_run, "realized_rmspe_daily")
    assert len(daily) == 6  # Monday..Saturday: Sunday is closed
    metrics = httpx.get(f"{pushgateway}/metrics").text
    assert f'sluice_realized_rmspe{{instance="",job="sluice-feedback",model="{model}",version="{stable}"}}' in metrics
    # Both versions' figures on their common store-days (the canary's), labelled with the run.
    common = [line for line in metrics.splitlines() if line.startswith("sluice_realized_common_rows{")]
    assert len(common) == 2 and all(f'model="{model}"' in line and "feedback_run=" in line for line in common)
    assert {float(line.rsplit(" ", 1)[1]) for line in common} == {float((sales[part.index] > 0).sum())}

    missing = tmp_path / "none.csv"
    code, text = sluice(capsys, "feedback", "--model", model, "--actuals", str(missing))
    assert code == 2 and text.startswith(f"error: --actuals: no file {missing}")


@pytest.mark.integration
def test_the_rollout_reads_realized_accuracy_from_prometheus(sluice_env: Settings) -> None:
    """What `sluice feedback` pushes (common store-days, per run) is what the rollout's accuracy gate
    reads back through the embedded Prometheus: the newest run that scored both versions."""
    from datetime import UTC, datetime

    from pipelines.monitoring.export import FeedbackFigures, feedback_registry, push
    from pipelines.platform import pushgateway
    from pipelines.rollout import metrics

    if not pushgateway.healthy(sluice_env) or not httpx.get(f"{sluice_env.metrics_url}/-/ready").is_success:
        pytest.skip("the platform runs no Pushgateway or Prometheus here (make setup installs them)")
    model, gateway = "accuracy-gate-it", sluice_env.embedded_pushgateway_url
    for version, common in (("1", 0.110), ("2", 0.140)):
        figures = FeedbackFigures(rmspe=common, rows=500, common_rmspe=common, common_rows=400, run="20261130T080000Z")
        push(gateway, "sluice-feedback", model, version, feedback_registry(model, version, figures, time.time()))
    deadline = time.monotonic() + 60
    while (got := metrics.realized(sluice_env.metrics_url, model, "2", "1", datetime.now(UTC))) is None:
        assert time.monotonic() < deadline, "Prometheus did not scrape the feedback figures within 60 s"
        time.sleep(1)
    assert got == pytest.approx((0.140, 0.110))
