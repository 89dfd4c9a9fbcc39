"""Wire SluiceModel into kserve.ModelServer: V2 REST and gRPC, errors as 4xx, metrics on /metrics.

KServe 0.21 already maps InvalidInput to 400 (gRPC INVALID_ARGUMENT) and ModelNotFound to 404. Three
gaps are closed here, found by sending bad requests to the installed server:
- FastAPI rejects malformed JSON / a body that is not a V2 request with its own 422 `{"detail": ...}`;
  a handler turns that into 400 `{"error": ...}`.
- A body that is not JSON (wrong content type) reaches DataPlane.decode as bytes, and a broken binary
  tensor payload raises KeyError/ValueError there, which the generic handler turns into 500;
  SluiceDataPlane turns both into InvalidInput.
- Unknown routes and methods answer `{"detail": ...}`; they get the V2 `{"error": ...}` shape too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.decode import RequestError
from serving.metrics import ServingMetrics
from serving.model import DEFAULT_MAX_ROWS, SluiceModel

log = logging.getLogger(__name__)

# Seconds a SIGTERM waits for in-flight requests; Kubernetes' default grace period is 30 s.
GRACE_PERIOD = 20


@dataclass(frozen=True)
class ServeOptions:
    model_dir: Path
    model_name: str = "rossmann"
    model_version: str | None = None
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    max_rows: int = DEFAULT_MAX_ROWS


def _record_rejected(registry: ModelRepository, model_name: str | None) -> None:
    model = registry.get_model(model_name) if model_name else None
    if isinstance(model, SluiceModel):
        model.record_rejected()


class SluiceDataPlane(DataPlane):
    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        # KServe leaves `versions` out; a canary and its stable revision must be told apart.
        # (KServe 0.21's gRPC servicer drops `versions` from ModelMetadata regardless; gRPC clients
        # read `model_version` from each infer response.)
        metadata = await super().model_metadata(model_name)
        model = self.model_registry.get_model(model_name)
        if isinstance(model, SluiceModel):
            metadata["versions"] = [model.version]
            metadata["platform"] = "mlflow"
        return metadata

    def decode(  # type: ignore[override]
        self,
        body: Any,
        headers: dict[str, str] | None,
        protocol_version: str = PredictorProtocol.REST_V1.value,
        model_name: str | None = None,
    ) -> Any:
        headers = headers or {}
        try:
            if (
                isinstance(body, bytes)
                and protocol_version.lower() == PredictorProtocol.REST_V2.value
                and INFERENCE_CONTENT_LENGTH_HEADER not in headers
            ):
                if not headers.get("content-type"):
                    # tritonclient.http sends JSON without a content-type; FastAPI then hands over raw
                    # bytes, which stock KServe rejects. A missing content-type means "JSON" here.
                    body = _parse_v2_json(body)
                    return super().decode(body, headers, protocol_version, model_name)
                raise RequestError(
                    "content-type",
                    f"got {headers.get('content-type')!r}; expected application/json "
                    f"(or the binary tensor extension with {INFERENCE_CONTENT_LENGTH_HEADER})",
                )
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput:
            _record_rejected(self.model_registry, model_name)
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            _record_rejected(self.model_registry, model_name)
            raise RequestError("body", f"malformed V2 request ({type(e).__name__}: {e})") from e


def _parse_v2_json(body: bytes) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise InvalidInput(_format_errors(e.errors())) from None  # the text names the field


def _format_validation_errors(exc: RequestValidationError) -> str:
    return _format_errors(exc.errors())


def _format_errors(errors: Sequence[Any]) -> str:
    parts: list[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", err.get("msg", ""))
            return f"body: malformed JSON ({detail}); expected a V2 inference request object"
        if "bytes" in loc:  # the endpoint also accepts raw bytes; that alternative's error is noise
            continue
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts[:5]) or "body: expected a V2 inference request object"


def install_error_handlers(app: FastAPI, registry: ModelRepository) -> None:
    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        _record_rejected(registry, request.path_params.get("model_name"))
        return JSONResponse(status_code=400, content={"error": _format_validation_errors(exc)})

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)})

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


class SluiceModelServer(ModelServer):
    """kserve.ModelServer that binds HTTP to `host` (KServe hard-codes 0.0.0.0; gRPC stays on [::])."""

    def __init__(self, host: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.host = host
        self.dataplane = SluiceDataPlane(model_registry=self.registered_models)

    def setup_event_loop(self) -> None:
        # start() builds the uvicorn config, then calls this before running it: the one hook where
        # the listen address can still be changed.
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        super().setup_event_loop()


def build(options: ServeOptions, metrics: ServingMetrics | None = None) -> tuple[SluiceModelServer, SluiceModel]:
    from kserve.model_server import app  # the module-level FastAPI app every RESTServer serves

    metrics = metrics if metrics is not None else ServingMetrics()
    model = SluiceModel(
        options.model_name,
        options.model_dir,
        max_rows=options.max_rows,
        version=options.model_version,
        metrics=metrics,
    )
    model.load()
    server = SluiceModelServer(
        options.host,
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        # One process: the metrics live in this process's registry (no prometheus multiprocess mode).
        workers=1,
        enable_grpc=True,
        enable_docs_url=False,
        grace_period=GRACE_PERIOD,
    )
    install_error_handlers(app, server.registered_models)
    metrics.expose()
    return server, model


def serve(options: ServeOptions) -> int:
    """Load the model and serve until SIGTERM/SIGINT; returns the process exit code."""
    # KServe's loggers do not propagate, so a root handler for ours duplicates nothing.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server, model = build(options)
    log.info(
        "serving %s version %s from %s on http://%s:%d and grpc :%d",
        model.name,
        model.version,
        options.model_dir,
        options.host,
        options.http_port,
        options.grpc_port,
    )
    server.start([model])
    return 0
