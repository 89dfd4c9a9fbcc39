"""The forecaster as an MLflow pyfunc: input is Kaggle's test.csv minus Id, output daily Sales.

Store attributes and training-window statistics travel with the model as an artifact, so a client
sends only what it knows on the day. The class is pickled by reference to this module, and the
`model` package itself is logged with it (MLflow `code_paths`, under `code/model/` in the model
directory): each version predicts with the feature code it was trained with, and the runtime image
needs no copy of `model/`. Its libraries come from the same lock file (see serving/), which is what
removes version skew.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from model.features import coerce_input
from model.training import TrainedModel, forecast

BOOSTER_FILE = "booster.ubj"
# A pandas pickle, not parquet: reading parquet needs pyarrow (150 MB), which the runtime image has no
# other use for. The model itself is already a pickle, and pandas is pinned by the lock file.
STORES_FILE = "stores.pkl"
# The `model` package, logged with every version (see the module docstring).
CODE_PATHS = [str(Path(__file__).resolve().parent)]

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("long", "Store"),
            ColSpec("long", "DayOfWeek"),
            ColSpec("string", "Date"),
            ColSpec("long", "Open"),
            ColSpec("long", "Promo"),
            ColSpec("string", "StateHoliday"),
            ColSpec("long", "SchoolHoliday"),
        ]
    ),
    outputs=Schema([ColSpec("double", "predictions")]),
)


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; listed explicitly because inference would miss our own imports."""
    from importlib.metadata import PackageNotFoundError, version

    def pin(*dists: str) -> str:
        for dist in dists:  # the first distribution that is installed provides the module
            try:
                return f"{dist}=={version(dist)}"
            except PackageNotFoundError:
                continue
        return dists[0]

    return [
        pin("mlflow"),
        pin("xgboost-cpu", "xgboost"),
        pin("pandas"),
        pin("numpy"),
        pin("scikit-learn"),
        pin("holidays"),
        pin("tqdm"),
    ]


class RossmannForecaster(PythonModel):
    def load_context(self, context: Any) -> None:
        self.booster = xgb.Booster()
        self.booster.load_model(context.artifacts["booster"])
        stores = context.artifacts["stores"]
        # Versions logged before the pickle format (and before code_paths) still load here.
        self.store_table = pd.read_parquet(stores) if stores.endswith(".parquet") else pd.read_pickle(stores)

    # No type hints on model_input: MLflow 3 would derive a second signature from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = coerce_input(frame, self.store_table.index)
        return forecast(self.booster, self.store_table, rows)


def _write_artifacts(trained: TrainedModel, folder: Path) -> dict[str, str]:
    booster_path, stores_path = folder / BOOSTER_FILE, folder / STORES_FILE
    trained.booster.save_model(str(booster_path))
    trained.store_table.to_pickle(stores_path)
    return {"booster": str(booster_path), "stores": str(stores_path)}


def save_pyfunc(trained: TrainedModel, path: Path) -> None:
    """Write the MLflow model directory to `path` (which must not exist)."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=RossmannForecaster(),
            artifacts=_write_artifacts(trained, Path(tmp)),
            signature=SIGNATURE,
            input_example=trained.input_example,
            pip_requirements=pip_requirements(),
            code_paths=CODE_PATHS,
        )


def log_pyfunc(trained: TrainedModel, name: str = "model", registered_model_name: str | None = None) -> Any:
    """Log the model to the active MLflow run; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=RossmannForecaster(),
            artifacts=_write_artifacts(trained, Path(tmp)),
            signature=SIGNATURE,
            input_example=trained.input_example,
            pip_requirements=pip_requirements(),
            code_paths=CODE_PATHS,
            registered_model_name=registered_model_name,
        )
