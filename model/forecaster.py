"""The forecast function: booster + feature tables -> daily sales. Training and serving both call it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from model.calendar import CalendarTable
from model.features import FEATURES, FeatureTables, feature_matrix
from model.inputs import Requests
from model.small_batch import MAX_ROWS, TreeWalk

BOOSTER_FILE = "booster.ubj"
# A pandas pickle, not parquet: reading parquet needs pyarrow (150 MB), which the runtime image has no
# other use for. The model itself is already a pickle, and pandas is pinned by the lock file.
STORES_FILE = "stores.pkl"
BIAS = "bias"  # the name of the last contributions column
CALENDAR_FILE = "calendar.npz"


@dataclass(frozen=True)
class Forecaster:
    """A fitted model and everything a request needs besides its own row."""

    booster: xgb.Booster
    store_table: pd.DataFrame  # store attributes and statistics up to the forecast origin
    calendar: CalendarTable
    tables: FeatureTables

    @classmethod
    def from_parts(cls, booster: xgb.Booster, store_table: pd.DataFrame, calendar: CalendarTable) -> Forecaster:
        return cls(booster, store_table, calendar, FeatureTables.build(store_table, calendar))

    def log_sales(self, req: Requests) -> np.ndarray:
        """The booster's raw output, log1p(Sales), for every row (open or not)."""
        matrix = feature_matrix(self.tables, req)
        if len(req) <= MAX_ROWS:
            walk = self.tree_walk
            if walk is not None:
                # The same floats as inplace_predict, without its fixed cost per call (model.small_batch).
                return np.asarray(walk.predict(matrix), dtype="float64")
        return np.asarray(self.booster.inplace_predict(matrix), dtype="float64")

    @cached_property
    def tree_walk(self) -> TreeWalk | None:
        """Built on first use (~1 s for 350 trees of depth 10): the pyfunc builds it at load."""
        return TreeWalk.of(self.booster)

    def contributions(self, req: Requests) -> np.ndarray:
        """Per-row TreeSHAP contributions to log1p(Sales): columns FEATURES then the bias, whose sum is
        `log_sales` (xgboost's `pred_contribs`, exact for trees; no extra dependency)."""
        if len(req) == 0:
            return np.zeros((0, len(FEATURES) + 1), dtype="float64")
        matrix = xgb.DMatrix(feature_matrix(self.tables, req), feature_names=list(FEATURES))
        return np.asarray(self.booster.predict(matrix, pred_contribs=True), dtype="float64")

    def predict(self, req: Requests) -> np.ndarray:
        """Daily sales; closed days are 0."""
        if len(req) == 0:
            return np.zeros(0, dtype="float64")
        pred = np.expm1(self.log_sales(req))
        return np.where(req.open == 1, np.clip(pred, 0, None), 0.0)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the three artifacts into `folder`; returns name -> path (MLflow's `artifacts`)."""
        paths = {"booster": folder / BOOSTER_FILE, "stores": folder / STORES_FILE, "calendar": folder / CALENDAR_FILE}
        self.booster.save_model(str(paths["booster"]))
        self.store_table.to_pickle(paths["stores"])
        self.calendar.save(paths["calendar"])
        return {k: str(v) for k, v in paths.items()}

    @classmethod
    def load(cls, booster_path: str | Path, stores_path: str | Path, calendar_path: str | Path) -> Forecaster:
        booster = xgb.Booster()
        booster.load_model(str(booster_path))
        stores = str(stores_path)
        table = pd.read_parquet(stores) if stores.endswith(".parquet") else pd.read_pickle(stores)
        return cls.from_parts(booster, table, CalendarTable.load(calendar_path))

    @classmethod
    def load_dir(cls, folder: Path) -> Forecaster:
        return cls.load(folder / BOOSTER_FILE, folder / STORES_FILE, folder / CALENDAR_FILE)
