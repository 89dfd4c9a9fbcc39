"""The reference sample each version carries: what its traffic should look like, for drift checks.

A sample of the last window of the training data (the holdout days): the model's inputs, the
registered (refit) model's prediction for them, and the true Sales. Drift compares logged traffic
with it (pipelines/drift.py); it is logged as a Parquet artifact of the version's run.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from model.forecaster import Forecaster
from model.inputs import Requests
from model.schema import INPUT_COLUMNS

ARTIFACT_DIR = "reference"
ARTIFACT_FILE = "reference.parquet"
ARTIFACT_PATH = f"{ARTIFACT_DIR}/{ARTIFACT_FILE}"
REFERENCE_TAG = "model.reference"  # version tag naming the artifact (absent: trained before samples existed)
ROWS = 5000
COLUMNS = [*INPUT_COLUMNS, "prediction", "Sales"]


def sample(forecaster: Forecaster, window: pd.DataFrame, rows: int = ROWS, seed: int = 42) -> pd.DataFrame:
    """Up to `rows` store-days of `window` (typed data, model.data) drawn uniformly, with the served
    model's prediction. Date is a YYYY-MM-DD string, as clients send it and the log stores it."""
    picked = window if len(window) <= rows else window.sample(n=rows, random_state=seed)
    picked = picked.sort_values(["Date", "Store"], kind="stable")
    prediction = forecaster.predict(Requests.from_frame(picked)) if len(picked) else np.zeros(0)
    out = picked[[*INPUT_COLUMNS, "Sales"]].copy()
    out["Date"] = out["Date"].dt.strftime("%Y-%m-%d")
    out["StateHoliday"] = out["StateHoliday"].astype(str)
    out["prediction"] = np.asarray(prediction, dtype="float64")
    return out[COLUMNS].reset_index(drop=True)


def save(frame: pd.DataFrame, folder: Path) -> Path:
    path = folder / ARTIFACT_FILE
    frame.to_parquet(path, index=False)
    return path


def load(data: bytes | Path) -> pd.DataFrame:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    frame = pd.read_parquet(source)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the reference sample lacks columns {missing}")
    return frame
