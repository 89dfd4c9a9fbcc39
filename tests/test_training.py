"""Training and registration against real services: LocalStack S3 + MLflow server, and real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from model import reference
from model.evaluation import evaluate
from model.registry import log_and_register
from model.schema import INPUT_COLUMNS
from model.synthetic import generate
from model.training import TrainConfig, train
from pipelines.config import Settings

REPO = Path(__file__).resolve().parent.parent


def _sluice(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`sluice <args>` as a user runs it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.integration
def test_train_register_in_s3_and_load_back(platform_env: Settings, tmp_path: Path) -> None:
    raw = generate(stores=15, days=300, seed=4)
    trained = train(raw, TrainConfig.quick(), progress=False)
    registered = log_and_register(trained, "rossmann-it", alias="champion")
    assert registered is not None

    # The download URI is what a KServe storageUri gets: it must be s3:// in our bucket.
    uri = urlparse(registered.download_uri)
    assert uri.scheme == "s3", registered.download_uri
    assert uri.netloc == platform_env.models_bucket
    s3 = boto3.client("s3", endpoint_url=platform_env.s3_endpoint_url)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=uri.netloc, Prefix=uri.path.lstrip("/"))["Contents"]}
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"MLmodel", "python_model.pkl", "booster.ubj", "stores.pkl", "calendar.npz"} <= names

    client = MlflowClient()
    mv = client.get_model_version("rossmann-it", registered.version)
    assert mv.tags["data.source"].startswith("synthetic:")
    assert float(mv.tags["metrics.rmspe"]) == pytest.approx(trained.metrics["rmspe"], abs=1e-4)
    assert len(mv.tags["data.fingerprint"]) == 16
    assert mv.tags["git.commit"]
    assert mv.tags["train.rounds"] == "80" and mv.tags["selection.id"] == "none"  # quick: not backtested
    assert mv.tags["data.train_end"] == str(raw.last_date.date())  # refit on all the data
    # The holdout model (fitted before the holdout window) is logged with the run for the gate.
    assert "importance.png" in {a.path for a in client.list_artifacts(registered.run_id)}
    holdout = client.list_artifacts(registered.run_id, "holdout")
    assert {a.path.rsplit("/", 1)[-1] for a in holdout} == {"booster.ubj", "stores.pkl", "calendar.npz"}
    assert client.get_model_version_by_alias("rossmann-it", "champion").version == registered.version
    # The reference sample for drift checks is an artifact of the run, named by a version tag.
    assert mv.tags[reference.REFERENCE_TAG] == reference.ARTIFACT_PATH
    local = client.download_artifacts(registered.run_id, reference.ARTIFACT_PATH, str(tmp_path))
    assert trained.reference is not None
    pd.testing.assert_frame_equal(reference.load(Path(local)), trained.reference)

    # Loaded back from S3 through the registry, it predicts what the in-memory model predicts.
    loaded = mlflow.pyfunc.load_model("models:/rossmann-it@champion")
    rows = raw.train[INPUT_COLUMNS].tail(200).assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d"))
    pred = np.asarray(loaded.predict(rows))
    assert pred.shape == (200,)
    closed = rows["Open"].to_numpy() == 0
    assert (pred[closed] == 0).all() and (pred[~closed] > 0).all()
    schema = loaded.metadata.get_input_schema()
    assert schema is not None and schema.input_names() == INPUT_COLUMNS


@pytest.mark.integration
def test_evaluate_records_verdict_on_candidate(platform_env: Settings) -> None:
    raw = generate(stores=12, days=300, seed=9)
    good = log_and_register(train(raw, TrainConfig.quick(), progress=False), "rossmann-gate", alias="champion")
    weak_config = TrainConfig(rounds=3, learning_rate=0.05, max_depth=2, early_stopping_rounds=3, baseline_iterations=5)
    weak = log_and_register(train(raw, weak_config, progress=False), "rossmann-gate")
    assert good is not None and weak is not None
    client = MlflowClient()

    verdict = evaluate(client, "rossmann-gate", weak.version, "champion", raw)
    assert not verdict.passed and verdict.baseline == good.version
    tags = client.get_model_version("rossmann-gate", weak.version).tags
    assert tags["gate.verdict"] == "fail" and tags["gate.baseline_version"] == good.version
    # Scored on the holdout: days both holdout models were fitted before, neither stopped nor tuned on.
    assert verdict.window == f"{tags['data.valid_start']}..{raw.last_date.date()}"
    assert tags["data.train_end"] == str(raw.last_date.date())

    first = evaluate(client, "rossmann-gate", good.version, "no-such-alias", raw)
    assert first.passed and first.baseline == ""

    # New stores opened since the champion was trained: the gate compares on the stores both know.
    wider = generate(stores=16, days=300, seed=9)
    grown = log_and_register(train(wider, TrainConfig.quick(), progress=False), "rossmann-gate")
    assert grown is not None
    verdict = evaluate(client, "rossmann-gate", grown.version, "champion", wider)
    assert verdict.baseline == good.version and verdict.baseline_rmspe is not None
    assert "on the 12 stores both know (4 left out)" in verdict.reason, verdict.reason


def test_gate_rows_are_the_stores_every_model_knows() -> None:
    from model.evaluation import Predictor, common_rows

    rows = pd.DataFrame({"Store": [1, 2, 3, 4, 4], "Sales": [1.0, 2.0, 3.0, 4.0, 5.0]})
    older = Predictor(lambda r: r["Sales"].to_numpy(), "holdout model", frozenset({1, 2, 4}))
    newer = Predictor(lambda r: r["Sales"].to_numpy(), "holdout model", frozenset({1, 2, 3, 4}))
    legacy = Predictor(lambda r: r["Sales"].to_numpy(), "registered model", None)
    kept, note = common_rows(rows, newer, older, legacy)
    assert kept["Store"].tolist() == [1, 2, 4, 4] and note == ", on the 3 stores both know (1 left out)"
    all_rows, none_left = common_rows(rows, newer, legacy)
    assert len(all_rows) == len(rows) and none_left == ""
    apart = Predictor(lambda r: r["Sales"].to_numpy(), "holdout model", frozenset({9}))
    assert common_rows(rows, older, apart)[0].empty


@pytest.mark.integration
def test_cli_train_quick_against_platform(platform: Settings, tmp_path: Path) -> None:
    """`sluice train` end to end as a user runs it: prints the s3:// URI and the next step."""
    env = {
        **os.environ,
        "SLUICE_STATE_DIR": str(platform.state_dir),
        "SLUICE_S3_PORT": str(platform.s3_port),
        "SLUICE_MLFLOW_PORT": str(platform.mlflow_port),
        "SLUICE_MODEL_NAME": "rossmann-cli",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ROSSMANN_DATA_DIR", None)
    out = _sluice(["train", "--preset", "quick", "--stores", "10", "--days", "200"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered rossmann-cli version 1" in out.stdout
    assert f"s3://{platform.models_bucket}/" in out.stdout
    assert "boosting (holdout)" in out.stderr and "boosting (all data)" in out.stderr  # progress over rounds


def test_cli_rejects_bad_data_with_named_column(tmp_path: Path) -> None:
    from model.synthetic import write_csv

    write_csv(tmp_path, stores=4, days=60, seed=1)
    train_csv = pd.read_csv(tmp_path / "train.csv", dtype=str)
    train_csv.loc[7, "Date"] = "yesterday"
    train_csv.to_csv(tmp_path / "train.csv", index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", "--preset", "quick", "--data-dir", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "column 'Date'" in out.stderr and "yesterday" in out.stderr
    assert not (tmp_path / "mlruns").exists(), "nothing is logged when validation fails"


REAL_DATA = os.environ.get("ROSSMANN_DATA_DIR")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA, reason="ROSSMANN_DATA_DIR not set: real Kaggle data not available")
def test_real_data_trains_to_useful_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.data import load_raw

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    raw = load_raw(Path(str(REAL_DATA)))
    assert raw.train["Store"].nunique() == 1115
    # Fewer, larger steps than the full preset: this checks the pipeline on real data in CI time
    # (two fits: holdout and refit); benchmarks/train.py measures the full configuration.
    config = TrainConfig(rounds=150, learning_rate=0.3, selected_by="")
    trained = train(raw, config, progress=False)
    assert trained.windows["valid_end"] == trained.windows["train_end"] == str(raw.last_date.date())
    assert trained.metrics["rmspe"] < 0.12
    assert trained.metrics["rmspe"] < trained.metrics["baseline_rmspe"]
    registered = log_and_register(trained, "rossmann-real")
    assert registered is not None
    assert MlflowClient().get_model_version("rossmann-real", registered.version).tags["data.source"].startswith("dir:")


def test_cli_backtest_prints_windows_and_writes_a_selection(tmp_path: Path) -> None:
    """`sluice backtest` as a user runs it, on generated data: per-window table, JSON report, selection file."""
    env = {k: v for k, v in os.environ.items() if k != "ROSSMANN_DATA_DIR"}
    data = ["--stores", "6", "--days", "800"]
    rounds = ["--rounds", "20", "--max-rounds", "40"]
    files = ["--out", str(tmp_path / "report.json"), "--write-selection", str(tmp_path / "selection.json")]
    forests = ["--parallel-trees", "2"]
    out = _sluice(["backtest", "--preset", "quick", *data, *rounds, *forests, *files], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mean (std)" in out.stdout and "best mean at" in out.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["windows"]) == 4 and len(report["mean_by_week"]) == 6
    assert set(report["mean_by_rounds"]) == {"4", "8", "12", "16", "20", "24", "28", "32", "36", "40"}
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["config"]["rounds"] == report["best_rounds"]
    assert selection["config"]["num_parallel_tree"] == 2
    assert "--parallel-trees 2 --rounds 20 --max-rounds 40" in selection["command"]  # enough to run it again
    assert selection["id"].startswith("backtest-") and "/" not in selection["data"]
    bad = _sluice(["backtest", "--preset", "quick", *data, "--parallel-trees", "0"], env, timeout=60)
    assert bad.returncode == 2 and "--parallel-trees must be 1 or more" in bad.stderr


def test_cli_backtest_seeds_reports_the_spread_and_the_average(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROSSMANN_DATA_DIR"}
    base = ["backtest", "--preset", "quick", "--stores", "6", "--days", "800"]
    out = _sluice([*base, "--rounds", "10", "--seeds", "1,2", "--out", str(tmp_path / "seeds.json")], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "averaged" in out.stdout and "seed 2" in out.stdout and "costs 2x the boosting" in out.stdout
    doc = json.loads((tmp_path / "seeds.json").read_text())
    assert doc["seeds"] == [1, 2] and len(doc["windows"]) == 4
    assert all(set(w["by_seed"]) == {"1", "2"} and w["averaged"] > 0 for w in doc["windows"])
    bad = _sluice([*base, "--seeds", "1,x"], env, timeout=60)
    assert bad.returncode == 2 and "seeds must be integers" in bad.stderr
    both = _sluice([*base, "--seeds", "1,2", "--write-selection", str(tmp_path / "s.json")], env, timeout=60)
    assert both.returncode == 2 and "leave out --write-selection" in both.stderr
    assert not (tmp_path / "s.json").exists()
