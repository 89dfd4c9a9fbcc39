"""The KServe model: an MLflow pyfunc directory served over the V2 protocol, in the style of KServe's
sklearnserver (load() reads the model directory, predict() maps a V2 request to a V2 response).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.decode import RequestError, decode_request
from serving.metrics import BoundMetrics, ServingMetrics
from serving.provenance import resolve_version
from serving.signature import OUTPUT_NAME, ModelInfo, read_model_info

DEFAULT_MAX_ROWS = 10_000


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
        self._bound: BoundMetrics | None = None

    def load(self) -> bool:
        self.info = read_model_info(self.model_dir)
        self._pyfunc = mlflow.pyfunc.load_model(str(self.model_dir))
        self.version = resolve_version(self.model_dir, self.version or None)
        self._bound = self.metrics.bind(self.name, self.version, self.info.run_id, self.info.model_uuid)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return self._loaded_info().input_metadata()

    def get_output_types(self) -> list[dict[str, Any]]:
        return ModelInfo.output_metadata()

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
        frame = decode_request(payload, info.columns, self.max_rows)
        try:
            raw = self._pyfunc.predict(frame)
        except ValueError as e:
            field = getattr(e, "field", None)
            # The model flags values it does not know (unknown Store, bad date) with a ValueError that
            # names the field (model.errors.InvalidInputError). Duck-typed so any pyfunc can do it.
            if isinstance(field, str):
                raise RequestError(field, _without_field(str(e), field)) from e
            raise
        predictions = np.asarray(raw, dtype=np.float64).reshape(-1)
        if predictions.size != len(frame):
            raise RuntimeError(f"model returned {predictions.size} predictions for {len(frame)} rows")
        if self._bound is not None:
            self._bound.observe_predictions(predictions)
        values = predictions.astype(np.float32)
        output = InferOutput(OUTPUT_NAME, [int(values.size)], "FP32")
        if payload.from_grpc:
            # KServe 0.21's InferResponse.to_grpc tests a numpy array's truth value when the request
            # came as raw_input_contents (tritonclient.grpc): a 500 for more than one row. Raw bytes
            # are what it would send anyway.
            output.set_data_from_numpy(values, binary_data=True)
        else:
            output.data = values  # KServe encodes it as JSON or the binary extension, as requested
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            model_version=self.version,
            infer_outputs=[output],
            from_grpc=payload.from_grpc,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _loaded_info(self) -> ModelInfo:
        if self.info is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self.info


def _without_field(message: str, field: str) -> str:
    # model.errors.InvalidInputError's text already starts with "<field>: "; RequestError adds it again.
    prefix = f"{field}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
