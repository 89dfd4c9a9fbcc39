"""The forecaster as an MLflow pyfunc: input is Kaggle's test.csv minus Id, output daily Sales.

Store attributes and statistics up to the forecast origin (stores.pkl), the calendar of the dates
the model serves (calendar.npz) and the booster (booster.ubj) travel with the model as artifacts, so a
client sends only what it knows on the day. The class is pickled by reference to this module, and the
`model` package itself is logged with it (MLflow `code_paths`, under `code/model/` in the model
directory): each version predicts with the feature code it was trained with, and the runtime image
needs no copy of `model/`. Its libraries come from the same lock file (see serving/), which is what
removes version skew.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd  # resolved at runtime: MLflow reads predict's type hint
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema

from model.features import FEATURES
from model.forecaster import BIAS, Forecaster
from model.inputs import parse_requests

if TYPE_CHECKING:  # the runtime loads this module without scikit-learn (only training needs it)
    from model.training import TrainedModel

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
# One input check, not two: RossmannForecaster.predict validates every column itself
# (model.inputs.parse_requests, errors naming the field). This MLmodel flag makes
# PyFuncModel.predict skip its own schema enforcement, which cost more than the whole prediction
# (docs/benchmarks.md); the signature still declares the columns for clients and the runtime.
SIGNATURE._is_signature_from_type_hint = True


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
        a = context.artifacts
        self.forecaster = Forecaster.load(a["booster"], a["stores"], a["calendar"])
        self.forecaster.tree_walk  # noqa: B018 (built now, at load, not on the first request)

    # model_input is hinted as a DataFrame, one of the hints MLflow 3 derives no signature from and
    # wraps no validation around (without a hint it warns "Add type hints to the `predict` method"
    # in every process that imports this, e.g. on every push's CI check). parse_requests checks the
    # values (allowed codes, date format) and reads the columns straight into numpy, whatever the
    # container: a DataFrame, or a mapping of columns from `mlflow models serve`.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self.forecaster.predict(parse_requests(model_input))

    # Not part of the pyfunc interface either: the runtime (serving.model) calls it with the request's
    # decoded column arrays, which saves building a DataFrame and MLflow's per-call wrapper. The same
    # check and the same forecast function as `predict`.
    def predict_columns(self, columns: Mapping[str, Any]) -> Any:
        """Daily sales for a mapping of column name -> array (the columns of `predict`'s DataFrame)."""
        return self.forecaster.predict(parse_requests(columns))

    # Not part of the pyfunc interface: the runtime finds it on the unwrapped model (duck-typed), so a
    # version logged before it existed still serves predictions and says it cannot explain.
    def explain(self, model_input: Any) -> Any:
        """TreeSHAP contributions per row: one column per `contribution_names()`, summing to log1p(Sales)."""
        return self.forecaster.contributions(parse_requests(model_input))

    def contribution_names(self) -> list[str]:
        return [*FEATURES, BIAS]


def serving_example(rows: pd.DataFrame) -> dict[str, list[Any]]:
    """The input example as a mapping of columns. Because of the type-hint flag on SIGNATURE, MLflow's
    scoring server (`mlflow models serve`) takes only `{"inputs": ...}`, which is what MLflow
    writes as `serving_input_example.json` for a mapping, and then validates against the model.
    A DataFrame example would be written as `dataframe_split`, which that server refuses."""
    return {name: rows[name].tolist() for name in rows.columns}


def _write_artifacts(trained: TrainedModel, folder: Path) -> dict[str, str]:
    return trained.forecaster.save(folder)


def save_pyfunc(trained: TrainedModel, path: Path) -> None:
    """Write the MLflow model directory to `path` (which must not exist)."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=RossmannForecaster(),
            artifacts=_write_artifacts(trained, Path(tmp)),
            signature=SIGNATURE,
            input_example=serving_example(trained.input_example),
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
            input_example=serving_example(trained.input_example),
            pip_requirements=pip_requirements(),
            code_paths=CODE_PATHS,
            registered_model_name=registered_model_name,
        )
