"""`sluice forecast` against a real MLflow and LocalStack: a registered version, loaded like the runtime
loads it, forecasts a horizon into S3 and scores a test.csv into Kaggle's submission format."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.forecast import ForecastError, horizon_rows, read_rows

REPO = Path(__file__).resolve().parent.parent
MODEL = "rossmann-forecast"


def test_horizon_rows_say_their_assumptions() -> None:
    from pipelines.forecast import Horizon

    rows = horizon_rows([1, 3], Horizon(pd.Timestamp("2015-08-01"), 8, None))
    assert len(rows) == 16 and list(rows["Store"].unique()) == [1, 3]
    sunday = rows["Date"] == "2015-08-02"
    assert (rows.loc[sunday, "DayOfWeek"] == 7).all() and (rows.loc[sunday, "Open"] == 0).all()
    assert (rows.loc[~sunday, "Open"] == 1).all() and (rows["Promo"] == 0).all()


def test_a_scheduled_job_names_its_start_relative_to_today() -> None:
    import argparse
    from datetime import date

    from pipelines.forecast import _horizon

    args = argparse.Namespace(start="tomorrow", days=42, stores=None)
    assert _horizon(args, today=date(2026, 11, 30)).start == pd.Timestamp("2026-12-01")
    assert _horizon(argparse.Namespace(start="today", days=3, stores="2"), today=date(2026, 11, 30)).stores == [2]
    with pytest.raises(ForecastError, match=r"or today\|tomorrow"):
        _horizon(argparse.Namespace(start="next week", days=3, stores=None))


def test_read_rows_names_the_bad_column(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_text("Id,Store,DayOfWeek,Date,Open,Promo,StateHoliday,SchoolHoliday\n1,x,4,2015-09-17,1,1,0,0\n")
    with pytest.raises(ForecastError, match="column Store row 0"):
        read_rows(path)
    path.write_text("Store,Date\n1,2015-09-17\n")
    with pytest.raises(ForecastError, match="missing columns"):
        read_rows(path)


@pytest.fixture(scope="module")
def registered(platform: Settings) -> Iterator[tuple[str, pd.DataFrame]]:
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train

    raw = generate(stores=6, days=200, seed=12)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**platform.aws_env(), "MLFLOW_TRACKING_URI": platform.tracking_uri}.items():
            mp.setenv(key, value)
        reg = log_and_register(train(raw, TrainConfig.quick(), progress=False), MODEL, alias="champion")
    assert reg is not None
    yield reg.version, raw.train


def _sluice(platform: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(platform.state_dir),
        "SLUICE_S3_PORT": str(platform.s3_port),
        "SLUICE_MLFLOW_PORT": str(platform.mlflow_port),
        "SLUICE_MODEL_NAME": MODEL,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "forecast", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
def test_a_horizon_goes_to_s3_and_equals_the_pyfunc(
    platform_env: Settings, registered: tuple[str, pd.DataFrame], tmp_path: Path
) -> None:
    import mlflow.pyfunc

    from model.schema import INPUT_COLUMNS
    from pipelines.registry import s3_client

    version, history = registered
    start = (history["Date"].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    key = f"forecasts/{MODEL}/v{version}-{start}.parquet"
    plot = tmp_path / "forecast.png"
    proc = _sluice(
        platform_env, "--version", version, "--start", start, "--days", "14", "--stores", "1,2",
        "--out", f"s3://{platform_env.data_bucket}/forecasts/{MODEL}/v{version}-{{start}}.parquet",
        "--plot", str(plot),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "assumed: open every day but Sunday" in proc.stderr and "28 forecasts" in proc.stdout
    body = s3_client(platform_env).get_object(Bucket=platform_env.data_bucket, Key=key)["Body"].read()
    got = pd.read_parquet(io.BytesIO(body))
    assert len(got) == 28 and set(got["Store"]) == {1, 2}
    direct = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(got[INPUT_COLUMNS])
    np.testing.assert_allclose(got["Sales"], np.round(direct, 2))
    assert (got.loc[got["Open"] == 0, "Sales"] == 0).all() and (got.loc[got["Open"] == 1, "Sales"] > 0).all()
    assert plot.stat().st_size > 10_000


@pytest.mark.integration
def test_test_csv_becomes_a_submission_and_bad_requests_say_why(
    platform_env: Settings, registered: tuple[str, pd.DataFrame], tmp_path: Path
) -> None:
    version, history = registered
    rows = history.tail(30)[["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]]
    test_csv = tmp_path / "test.csv"
    rows.assign(Id=range(1, len(rows) + 1), Date=rows["Date"].dt.strftime("%Y-%m-%d")).to_csv(test_csv, index=False)
    submission = tmp_path / "submission.csv"
    proc = _sluice(
        platform_env, "--alias", "champion", "--rows", str(test_csv), "--out", str(tmp_path / "f.csv"),
        "--submission", str(submission), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = pd.read_csv(submission)
    assert list(sub.columns) == ["Id", "Sales"] and list(sub["Id"]) == list(range(1, 31))

    missing = _sluice(platform_env, "--version", "99", "--start", "2015-08-01", "--out", str(tmp_path / "x.csv"))
    assert missing.returncode == 2 and "cannot load models:/" in missing.stderr and "Traceback" not in missing.stderr
    unknown = _sluice(
        platform_env, "--version", version, "--start", "2015-08-01", "--stores", "999", "--out", str(tmp_path / "y.csv")
    )
    assert unknown.returncode == 2 and "does not know stores [999]" in unknown.stderr
