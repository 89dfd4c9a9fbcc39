"""Fit the Rossmann forecaster: xgboost on log sales, plus a scikit-learn baseline for comparison.

`train` fits twice with the same settings (rounds fixed: chosen by the rolling-origin backtests of
model/backtest.py, never by early stopping):
1. the holdout fit, on everything before the last `validation_days`, scored on those days: an
   honest figure, since nothing was stopped or tuned on them (the backtests leave them out), and
   the model the evaluation gate scores (see model/evaluation.py);
2. the refit on all the data, which is what gets registered and served.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.ensemble import HistGradientBoostingRegressor
from tqdm import tqdm

from model.data import RawData, fingerprint
from model.features import FEATURES, build_store_table, calendar_for, feature_matrix
from model.forecaster import Forecaster
from model.inputs import Requests
from model.metrics import rmse, rmspe
from model.reference import sample as reference_sample
from model.schema import INPUT_COLUMNS
from model.selection import SELECTION

log = logging.getLogger(__name__)


# TrainConfig fields the backtests choose and model/selection.json records.
SELECTED_FIELDS = (
    "rounds",
    "learning_rate",
    "max_depth",
    "subsample",
    "colsample_bytree",
    "min_child_weight",
    "num_parallel_tree",
)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults: the settings the backtests in model/selection.json chose (see docs/model.md)."""

    rounds: int = SELECTION.config["rounds"]
    learning_rate: float = SELECTION.config["learning_rate"]
    max_depth: int = SELECTION.config["max_depth"]
    subsample: float = SELECTION.config["subsample"]
    colsample_bytree: float = SELECTION.config["colsample_bytree"]
    min_child_weight: float = SELECTION.config["min_child_weight"]
    # Trees per round, each on its own row and column sample, averaged (xgboost splits the learning
    # rate among them): trees in all = rounds x num_parallel_tree. Backtested at 2 (docs/model.md):
    # no gain the windows could tell from noise, so the selection keeps 1.
    num_parallel_tree: int = SELECTION.config.get("num_parallel_tree", 1)
    # Kept so older callers still construct a config; ignored: rounds are fixed, chosen by backtests.
    early_stopping_rounds: int = 0
    validation_days: int = 42  # the holdout: the last days of the data
    baseline_iterations: int = 150
    nthread: int = 0  # 0: all cores
    seed: int = 42
    selected_by: str = SELECTION.id  # which backtests chose these settings ("" when none did)

    @classmethod
    def quick(cls) -> TrainConfig:
        """Few shallow rounds: seconds on small data, for demos and tests."""
        return cls(
            rounds=80, learning_rate=0.3, max_depth=6, num_parallel_tree=1, baseline_iterations=30, selected_by=""
        )

    def selected_settings(self) -> dict[str, Any]:
        """The fields a selection file records (model/selection.json `config`): what backtests choose."""
        return {k: getattr(self, k) for k in SELECTED_FIELDS}

    def xgb_params(self) -> dict[str, Any]:
        return {
            "objective": "reg:squarederror",
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "num_parallel_tree": self.num_parallel_tree,
            "tree_method": "hist",
            "nthread": self.nthread,
            "seed": self.seed,
        }


@dataclass
class TrainedModel:
    forecaster: Forecaster  # refit on all the data: registered and served
    holdout: Forecaster  # fit before the holdout window: scored there, and by the gate
    config: TrainConfig
    metrics: dict[str, float]
    windows: dict[str, str]  # train_start, train_end (all data), valid_start, valid_end (the holdout)
    counts: dict[str, int]
    data_source: str
    data_fingerprint: str
    input_example: pd.DataFrame
    baseline_params: dict[str, Any] = field(default_factory=dict)
    # A sample of the holdout days with the served model's predictions (model/reference.py): the
    # version's reference for drift checks. None: not built (e.g. a TrainedModel made by hand).
    reference: pd.DataFrame | None = None

    @property
    def booster(self) -> xgb.Booster:
        return self.forecaster.booster

    @property
    def store_table(self) -> pd.DataFrame:
        return self.forecaster.store_table

    def params(self) -> dict[str, Any]:
        return {**asdict(self.config), "features": len(FEATURES), "data_source": self.data_source}


def split_window(raw: RawData, validation_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Everything before the last `validation_days` days, and those days."""
    valid_start = raw.last_date - pd.Timedelta(days=validation_days - 1)
    if valid_start <= raw.first_date:
        raise ValueError(
            f"data spans {raw.first_date.date()}..{raw.last_date.date()}: too short for a "
            f"{validation_days}-day validation window plus a training window"
        )
    train = raw.train[raw.train["Date"] < valid_start]
    valid = raw.train[raw.train["Date"] >= valid_start]
    return train, valid


def fit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a model learns from: open days with sales (RMSPE ignores the others)."""
    return frame[(frame["Open"] == 1) & (frame["Sales"] > 0)]


def forecast(booster: xgb.Booster, store_table: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Daily sales for rows of typed data (model.data) from a booster and its store table; closed days are 0.

    The calendar is rebuilt for the rows' dates; its values do not depend on the range, so this
    equals the registered model's predictions.
    """
    if rows.empty:
        return np.zeros(0, dtype="float64")
    calendar = calendar_for(store_table, rows["Date"].min(), rows["Date"].max())
    return Forecaster.from_parts(booster, store_table, calendar).predict(Requests.from_frame(rows))


class _Progress(xgb.callback.TrainingCallback):
    """A tqdm bar over boosting rounds."""

    def __init__(self, total: int, label: str) -> None:
        self.bar = tqdm(total=total, desc=f"boosting ({label})", unit="round", mininterval=1.0, leave=True)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.bar.update(1)
        return False

    def after_training(self, model: Any) -> Any:
        self.bar.close()
        return model


@dataclass(frozen=True)
class Fitted:
    forecaster: Forecaster
    x_fit: np.ndarray  # the training features (the baseline reuses them)
    y_fit: np.ndarray
    fit_seconds: float


def fit(
    train_df: pd.DataFrame,
    store: pd.DataFrame,
    config: TrainConfig,
    progress: bool = False,
    label: str = "fit",
    serve_until: pd.Timestamp | None = None,
) -> Fitted:
    """Fit on `train_df` (data up to the forecast origin): store statistics, calendar, booster.

    The calendar covers the training data and the years after it up to `serve_until` (the data's
    end), plus the margin calendar.serving_years adds.
    """
    store_table = build_store_table(store, train_df)
    last = max(train_df["Date"].max(), serve_until) if serve_until is not None else train_df["Date"].max()
    calendar = calendar_for(store_table, train_df["Date"].min(), last)
    rows = fit_rows(train_df)
    empty = Forecaster.from_parts(xgb.Booster(), store_table, calendar)
    x_fit = feature_matrix(empty.tables, Requests.from_frame(rows))
    y_fit = np.log1p(rows["Sales"].to_numpy(dtype="float64"))
    callbacks: list[xgb.callback.TrainingCallback] = [_Progress(config.rounds, label)] if progress else []
    started = time.perf_counter()
    booster = xgb.train(
        config.xgb_params(),
        xgb.DMatrix(x_fit, label=y_fit, feature_names=FEATURES),
        num_boost_round=config.rounds,
        callbacks=callbacks,
    )
    return Fitted(Forecaster(booster, store_table, calendar, empty.tables), x_fit, y_fit, time.perf_counter() - started)


def _baseline(fitted: Fitted, config: TrainConfig, rows: pd.DataFrame) -> np.ndarray:
    """A scikit-learn HistGradientBoostingRegressor on the same features: the figure to beat."""
    model = HistGradientBoostingRegressor(max_iter=config.baseline_iterations, random_state=config.seed)
    model.fit(fitted.x_fit, fitted.y_fit)
    req = Requests.from_frame(rows)
    pred = np.expm1(model.predict(feature_matrix(fitted.forecaster.tables, req)))
    return np.where(req.open == 1, pred, 0.0)


def train(raw: RawData, config: TrainConfig | None = None, progress: bool = True) -> TrainedModel:
    """Holdout fit (scored on the last `validation_days`), baseline, then the refit on all the data."""
    config = config or TrainConfig()
    started = time.perf_counter()
    before, holdout_df = split_window(raw, config.validation_days)
    closed = int((raw.train["Open"] == 0).sum())
    zero_open = int(((raw.train["Open"] == 1) & (raw.train["Sales"] == 0)).sum())
    log.info(
        "data %s..%s: %s store-days; excluded from fitting: %s closed days and %s open days with zero sales",
        raw.first_date.date(),
        raw.last_date.date(),
        f"{len(raw.train):,}",
        f"{closed:,}",
        f"{zero_open:,}",
    )
    log.info(
        "holdout fit on %s..%s, %d rounds (%s)",
        before["Date"].min().date(),
        before["Date"].max().date(),
        config.rounds,
        config.selected_by or "settings not chosen by backtests",
    )
    held = fit(before, raw.store, config, progress, "holdout", serve_until=raw.last_date)
    y_true = holdout_df["Sales"].to_numpy(dtype="float64")
    y_pred = held.forecaster.predict(Requests.from_frame(holdout_df))
    base_pred = _baseline(held, config, holdout_df)
    log.info("refit on all %s..%s", raw.first_date.date(), raw.last_date.date())
    final = fit(raw.train, raw.store, config, progress, "all data")
    metrics = {
        "rmspe": rmspe(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "baseline_rmspe": rmspe(y_true, base_pred),
        "baseline_rmse": rmse(y_true, base_pred),
        "rounds": float(config.rounds),
        "holdout_fit_seconds": held.fit_seconds,
        "fit_seconds": final.fit_seconds,
        "train_seconds": time.perf_counter() - started,
    }
    log.info(
        "holdout %s..%s (nothing fitted, stopped or tuned on it): xgboost RMSPE %.4f (RMSE %.0f), "
        "sklearn baseline RMSPE %.4f; %.0fs in all",
        holdout_df["Date"].min().date(),
        holdout_df["Date"].max().date(),
        metrics["rmspe"],
        metrics["rmse"],
        metrics["baseline_rmspe"],
        metrics["train_seconds"],
    )
    example = holdout_df[INPUT_COLUMNS].head(5).copy()
    example["Date"] = example["Date"].dt.strftime("%Y-%m-%d")
    return TrainedModel(
        forecaster=final.forecaster,
        holdout=held.forecaster,
        config=config,
        metrics=metrics,
        windows={
            "train_start": str(raw.first_date.date()),
            "train_end": str(raw.last_date.date()),
            "valid_start": str(holdout_df["Date"].min().date()),
            "valid_end": str(holdout_df["Date"].max().date()),
        },
        counts={
            "train_rows": len(raw.train),
            "fit_rows": len(final.y_fit),
            "valid_rows": len(holdout_df),
            "excluded_closed": closed,
            "excluded_zero_sales": zero_open,
        },
        data_source=raw.source,
        data_fingerprint=fingerprint(raw),
        input_example=example.reset_index(drop=True),
        baseline_params={"model": "HistGradientBoostingRegressor", "max_iter": config.baseline_iterations},
        reference=reference_sample(final.forecaster, holdout_df, seed=config.seed),
    )
