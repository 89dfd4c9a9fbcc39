"""The KServe model: an MLflow pyfunc directory served over the V2 protocol, in the style of KServe's
sklearnserver (load() reads the model directory, predict() maps a V2 request to a V2 response).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.decode import RequestError, decode_columns
from serving.http_limits import DEFAULT_MAX_ROWS
from serving.metrics import BoundMetrics, ServingMetrics
from serving.provenance import resolve_version
from serving.signature import CONTRIBUTIONS_NAME, OUTPUT_NAME, ModelInfo, read_model_info


class SluiceModel(Model):
    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        version: str | None = None,
        metrics: ServingMetrics | None = None,
    ):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.max_rows = max_rows
        self.version = version or ""
        self.metrics = metrics if metrics is not None else ServingMetrics()
        self.info: ModelInfo | None = None
        self._pyfunc: Any = None
        self._predict_columns: Any = None  # the model's predict_columns(columns) -> predictions, if it has one
        self._explain: Any = None  # the model's explain(rows) -> (names, contributions), if it has one
        self._explained_names: list[str] = []
        self._bound: BoundMetrics | None = None

    def load(self) -> bool:
        self.info = read_model_info(self.model_dir)
        self._pyfunc = mlflow.pyfunc.load_model(str(self.model_dir))
        self._explain, self._explained_names = _explainer(self._pyfunc)
        self._predict_columns = _column_predictor(self._pyfunc)
        self.version = resolve_version(self.model_dir, self.version or None)
        self._bound = self.metrics.bind(self.name, self.version, self.info.run_id, self.info.model_uuid)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return self._loaded_info().input_metadata()

    def get_output_types(self) -> list[dict[str, Any]]:
        return ModelInfo.output_metadata(len(self._explained_names) or None)

    async def __call__(  # type: ignore[override]
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        # Wraps preprocess -> predict -> postprocess so every call, REST or gRPC, is counted once
        # with its outcome; KServe turns InvalidInput into 400 / INVALID_ARGUMENT, anything else 500.
        start = time.perf_counter()
        outcome = "error"
        try:
            result = await super().__call__(body, headers, verb)
            outcome = "ok"
            return result
        except InvalidInput:
            outcome = "invalid"
            raise
        finally:
            if self._bound is not None:
                self._bound.observe_request(outcome, time.perf_counter() - start)

    def record_rejected(self, outcome: str = "invalid") -> None:
        """Count a request that failed before it reached the model (malformed body, bad encoding)."""
        if self._bound is not None:
            self._bound.observe_request(outcome, None)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise RequestError("protocol", "this runtime speaks the V2 protocol: POST /v2/models/{name}/infer")
        info = self._loaded_info()
        columns = decode_columns(payload, info.columns, self.max_rows)
        rows = len(next(iter(columns.values())))
        try:
            if self._predict_columns is not None:
                raw = self._predict_columns(columns)
            else:
                raw = self._pyfunc.predict(pd.DataFrame(columns))
        except ValueError as e:
            field = getattr(e, "field", None)
            # The model flags values it does not know (unknown Store, bad date) with a ValueError that
            # names the field (model.errors.InvalidInputError). Duck-typed so any pyfunc can do it.
            if isinstance(field, str):
                raise RequestError(field, _without_field(str(e), field)) from e
            raise
        predictions = np.asarray(raw, dtype=np.float64).reshape(-1)
        if predictions.size != rows:
            raise RuntimeError(f"model returned {predictions.size} predictions for {rows} rows")
        if self._bound is not None:
            self._bound.observe_predictions(predictions)
        wanted = [o.name for o in payload.request_outputs or []] or [OUTPUT_NAME]
        outputs = []
        for name in wanted:
            if name == CONTRIBUTIONS_NAME:
                outputs.append(self._contributions(pd.DataFrame(columns), payload.from_grpc))
            else:
                outputs.append(_output(OUTPUT_NAME, predictions.astype(np.float32), payload.from_grpc))
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
            from_grpc=payload.from_grpc,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _contributions(self, frame: Any, from_grpc: bool) -> InferOutput:
        if self._explain is None:
            raise RequestError(
                "outputs",
                f"version {self.version or '?'} cannot give {CONTRIBUTIONS_NAME!r} (it was logged before "
                "explanations existed): ask only for 'predictions', or retrain and release a newer version",
            )
        values = self._explain(frame)
        out = _output(CONTRIBUTIONS_NAME, np.asarray(values, dtype=np.float32), from_grpc)
        # V2 parameters are scalars: the column names travel as one comma-separated string.
        out.parameters = {"feature_names": ",".join(self._explained_names)}
        return out

    def _loaded_info(self) -> ModelInfo:
        if self.info is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self.info


def _output(name: str, values: np.ndarray, from_grpc: bool) -> InferOutput:
    output = InferOutput(name, [int(d) for d in values.shape], "FP32")
    if from_grpc:
        # KServe 0.21's InferResponse.to_grpc tests a numpy array's truth value when the request
        # came as raw_input_contents (tritonclient.grpc): a 500 for more than one row. Raw bytes
        # are what it would send anyway.
        output.set_data_from_numpy(values, binary_data=True)
    else:
        output.data = values  # KServe encodes it as JSON or the binary extension, as requested
    return output


def _python_model(pyfunc: Any) -> Any:
    """The PythonModel inside a pyfunc, or None for another flavor (it has no optional methods)."""
    try:
        return pyfunc.unwrap_python_model()
    except Exception:
        return None


def _column_predictor(pyfunc: Any) -> Any:
    """The python model's `predict_columns`, or None: then PyFuncModel.predict gets a DataFrame.

    A model that reads its columns itself (this project's, model.pyfunc) is called with the decoded
    column arrays: no DataFrame is built and MLflow's wrapper (which inspects the predict signature
    on every call) is skipped. Together they were about a third of a one-row request's server CPU
    (docs/benchmarks.md). Any other pyfunc is served through MLflow as before.
    """
    predict = getattr(_python_model(pyfunc), "predict_columns", None)
    return predict if callable(predict) else None


def _explainer(pyfunc: Any) -> tuple[Any, list[str]]:
    """The python model's `explain` and its column names, or (None, []) if it has none."""
    inner = _python_model(pyfunc)
    explain, names = getattr(inner, "explain", None), getattr(inner, "contribution_names", None)
    if not (callable(explain) and callable(names)):
        return None, []
    return explain, [str(n) for n in names()]


def _without_field(message: str, field: str) -> str:
    # model.errors.InvalidInputError's text already starts with "<field>: "; RequestError adds it again.
    prefix = f"{field}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
