"""Fit the Rossmann forecaster: xgboost on log sales, plus a scikit-learn baseline for comparison.

Validation is time-based: the last `validation_days` of the given data are held out, store-level
statistics come from the window before them, and both models are scored there with RMSPE.
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
from model.features import FEATURES, build_store_table, feature_matrix, make_features
from model.metrics import rmse, rmspe
from model.schema import INPUT_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    rounds: int = 1200
    learning_rate: float = 0.1
    max_depth: int = 10
    subsample: float = 0.9
    colsample_bytree: float = 0.7
    min_child_weight: float = 5.0
    early_stopping_rounds: int = 100
    validation_days: int = 42
    baseline_iterations: int = 150
    nthread: int = 0  # 0: all cores
    seed: int = 42

    @classmethod
    def quick(cls) -> TrainConfig:
        """Few shallow rounds: seconds on small data, for demos and tests."""
        return cls(rounds=80, learning_rate=0.3, max_depth=6, early_stopping_rounds=20, baseline_iterations=30)


@dataclass
class TrainedModel:
    booster: xgb.Booster
    store_table: pd.DataFrame
    config: TrainConfig
    metrics: dict[str, float]
    windows: dict[str, str]  # train_start, train_end, valid_start, valid_end
    counts: dict[str, int]
    data_source: str
    data_fingerprint: str
    input_example: pd.DataFrame
    baseline_params: dict[str, Any] = field(default_factory=dict)

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


def forecast(booster: xgb.Booster, store_table: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Daily sales for typed input rows (see features.coerce_input); closed days are 0."""
    if rows.empty:
        return np.zeros(0, dtype="float64")
    pred = np.expm1(booster.inplace_predict(feature_matrix(rows, store_table))).astype("float64")
    return np.where(rows["Open"].to_numpy() == 1, np.clip(pred, 0, None), 0.0)


class _Progress(xgb.callback.TrainingCallback):
    """A tqdm bar over boosting rounds that also shows the latest validation RMSPE-ish loss."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="boosting", unit="round", mininterval=1.0, leave=True)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.bar.update(1)
        valid = evals_log.get("valid", {}).get("rmse")
        if valid:
            self.bar.set_postfix(valid_rmse_log=f"{valid[-1]:.4f}", refresh=False)
        return False

    def after_training(self, model: Any) -> Any:
        self.bar.close()
        return model


def _fit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["Open"] == 1) & (frame["Sales"] > 0)]


def train(raw: RawData, config: TrainConfig | None = None, progress: bool = True) -> TrainedModel:
    """Fit xgboost and the scikit-learn baseline; score both on the validation window."""
    config = config or TrainConfig()
    started = time.perf_counter()
    train_df, valid_df = split_window(raw, config.validation_days)
    closed = int((train_df["Open"] == 0).sum())
    zero_open = int(((train_df["Open"] == 1) & (train_df["Sales"] == 0)).sum())
    fit_df = _fit_rows(train_df)
    log.info(
        "training window %s..%s: %s store-days, %s used; excluded %s closed days and %s open days with zero sales",
        train_df["Date"].min().date(),
        train_df["Date"].max().date(),
        f"{len(train_df):,}",
        f"{len(fit_df):,}",
        f"{closed:,}",
        f"{zero_open:,}",
    )
    store_table = build_store_table(raw.store, train_df)
    x_fit = make_features(fit_df, store_table)
    y_fit = np.log1p(fit_df["Sales"].to_numpy(dtype="float64"))
    valid_fit = _fit_rows(valid_df)
    x_valid = make_features(valid_fit, store_table)
    y_valid = np.log1p(valid_fit["Sales"].to_numpy(dtype="float64"))
    log.info(
        "features: %d columns for %s training and %s validation rows (%.1fs)",
        len(FEATURES),
        f"{len(x_fit):,}",
        f"{len(x_valid):,}",
        time.perf_counter() - started,
    )

    dtrain = xgb.DMatrix(x_fit.to_numpy(), label=y_fit, feature_names=FEATURES)
    dvalid = xgb.DMatrix(x_valid.to_numpy(), label=y_valid, feature_names=FEATURES)
    params = {
        "objective": "reg:squarederror",
        "eta": config.learning_rate,
        "max_depth": config.max_depth,
        "subsample": config.subsample,
        "colsample_bytree": config.colsample_bytree,
        "min_child_weight": config.min_child_weight,
        "tree_method": "hist",
        "nthread": config.nthread,
        "seed": config.seed,
        "eval_metric": "rmse",
    }
    callbacks: list[xgb.callback.TrainingCallback] = [_Progress(config.rounds)] if progress else []
    fit_started = time.perf_counter()
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=config.rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=config.early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )
    best = int(getattr(booster, "best_iteration", config.rounds - 1))
    booster = booster[: best + 1]
    fit_seconds = time.perf_counter() - fit_started

    y_true = valid_df["Sales"].to_numpy(dtype="float64")
    y_pred = forecast(booster, store_table, valid_df)
    baseline = HistGradientBoostingRegressor(max_iter=config.baseline_iterations, random_state=config.seed)
    baseline.fit(x_fit.to_numpy(), y_fit)
    base_pred = np.where(
        valid_df["Open"].to_numpy() == 1,
        np.expm1(baseline.predict(make_features(valid_df, store_table).to_numpy())),
        0.0,
    )
    metrics = {
        "rmspe": rmspe(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "baseline_rmspe": rmspe(y_true, base_pred),
        "baseline_rmse": rmse(y_true, base_pred),
        "best_iteration": float(best),
        "fit_seconds": fit_seconds,
        "train_seconds": time.perf_counter() - started,
    }
    log.info(
        "validation %s..%s: xgboost RMSPE %.4f (RMSE %.0f), sklearn baseline RMSPE %.4f",
        valid_df["Date"].min().date(),
        valid_df["Date"].max().date(),
        metrics["rmspe"],
        metrics["rmse"],
        metrics["baseline_rmspe"],
    )
    example = valid_df[INPUT_COLUMNS].head(5).copy()
    example["Date"] = example["Date"].dt.strftime("%Y-%m-%d")
    return TrainedModel(
        booster=booster,
        store_table=store_table,
        config=config,
        metrics=metrics,
        windows={
            "train_start": str(train_df["Date"].min().date()),
            "train_end": str(train_df["Date"].max().date()),
            "valid_start": str(valid_df["Date"].min().date()),
            "valid_end": str(valid_df["Date"].max().date()),
        },
        counts={
            "train_rows": len(train_df),
            "fit_rows": len(fit_df),
            "valid_rows": len(valid_df),
            "excluded_closed": closed,
            "excluded_zero_sales": zero_open,
        },
        data_source=raw.source,
        data_fingerprint=fingerprint(raw),
        input_example=example.reset_index(drop=True),
        baseline_params={"model": "HistGradientBoostingRegressor", "max_iter": config.baseline_iterations},
    )
