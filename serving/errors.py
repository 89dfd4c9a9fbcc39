"""How a failed request is answered and logged, over REST and gRPC alike.

A client error is a 4xx (gRPC: INVALID_ARGUMENT, NOT_FOUND, ...) with `{"error": "<field>: ..."}` and
one log line, no traceback. A server fault is a 500 (INTERNAL) with a traceback in the log.

KServe 0.21's own handlers log a full traceback for every 400, and register the 500 handler under
`Exception`, which Starlette runs in ServerErrorMiddleware: that middleware answers, then re-raises
for the server to log, and uvicorn then drops the keep-alive connection without `Connection: close`
(the client's next request on it fails with a reset). Starlette's ExceptionMiddleware, which does not
re-raise, accepts no handler for all exceptions, so ServerFaultMiddleware, just outside it, answers
the 500 and the connection stays usable.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import JSONResponse
from grpc import StatusCode
from grpc.aio import AbortError
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.model_repository import ModelRepository
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.model import SluiceModel

log = logging.getLogger(__name__)

# Client errors: (HTTP status, gRPC code). Looked up along the exception's MRO.
CLIENT_ERRORS: dict[type[Exception], tuple[int, StatusCode]] = {
    InvalidInput: (400, StatusCode.INVALID_ARGUMENT),
    ModelNotFound: (404, StatusCode.NOT_FOUND),
    ModelNotReady: (503, StatusCode.UNAVAILABLE),
    ServerNotReady: (503, StatusCode.UNAVAILABLE),
    ServerNotLive: (503, StatusCode.UNAVAILABLE),
    UnsupportedProtocol: (501, StatusCode.UNIMPLEMENTED),
    NotImplementedError: (501, StatusCode.UNIMPLEMENTED),
}


def client_error(exc: BaseException) -> tuple[int, StatusCode] | None:
    for cls in type(exc).__mro__:
        if cls in CLIENT_ERRORS:
            return CLIENT_ERRORS[cls]
    return None


def record_rejected(
    registry: ModelRepository, model_name: str | None, outcome: str = "invalid", version: str | None = None
) -> None:
    """Count a request that failed before it reached the model (the model counts what reaches it).

    A request naming another version than the one served is not this version's: not counted.
    """
    model = registry.get_model(model_name) if model_name else None
    if isinstance(model, SluiceModel) and version in (None, model.version):
        model.record_rejected(outcome)


def quiet_per_request_logs() -> None:
    """No log line for a request that succeeds; the metrics count those.

    KServe's uvicorn access log, its timing middleware and its latency line write 1-4 lines per
    request at INFO, and FastAPI warns on every response that KServe's ORJSONResponse is deprecated
    (Python's once-per-location filter is reset by libraries entering warnings.catch_warnings, so it
    appears per request). Called after KServe configured its loggers (in ModelServer.__init__).
    """
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning)


# --- REST --------------------------------------------------------------------------------------------


def _rejected(request: Request, status: int, error: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    log.warning("rejected %s %s: %d %s", request.method, request.url.path, status, error)
    return JSONResponse(status_code=status, content={"error": error}, headers=headers)


def format_validation_errors(errors: Sequence[Any]) -> str:
    """FastAPI/pydantic validation errors as one line naming the fields, V2-style."""
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
    """Answer every failure as `{"error": ...}`. Call after KServe's RESTServer added its own handlers."""

    def _record(request: Request) -> None:
        params = request.path_params
        record_rejected(registry, params.get("model_name"), version=params.get("model_version"))

    async def client_error_handler(request: Request, exc: Exception) -> JSONResponse:
        status, _ = client_error(exc) or (400, StatusCode.INVALID_ARGUMENT)
        return _rejected(request, status, str(exc))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        _record(request)
        return _rejected(request, 400, format_validation_errors(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not read the body as JSON (e.g. not UTF-8)
            error = f"body: cannot be read as JSON ({error}); expected a V2 inference request object"
        if exc.status_code in (400, 408, 413):  # the body never reached the model: a rejected inference
            _record(request)
        return _rejected(request, exc.status_code, error, exc.headers)  # e.g. 405's Allow

    for cls in CLIENT_ERRORS:
        app.add_exception_handler(cls, client_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_fault)  # for faults in middleware outside ServerFaultMiddleware
    if not any(m.cls is ServerFaultMiddleware for m in app.user_middleware):  # installed twice by the preview
        app.add_middleware(ServerFaultMiddleware)


async def server_fault(request: Request, exc: Exception) -> JSONResponse:
    log.error("server fault in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"error": f"internal server error ({type(exc).__name__})"})


class ServerFaultMiddleware:
    """500 for an exception no handler took, without dropping the connection (see the module docstring)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # half a response is out: only closing the connection can tell the client
                raise
            response = await server_fault(Request(scope), exc)
            await response(scope, receive, send)


# --- gRPC --------------------------------------------------------------------------------------------


class GrpcErrorInterceptor(ExceptionToStatusInterceptor):
    """KServe's exception-to-status interceptor with the mapping above and one log line per rejection
    (KServe's logs a traceback for each and maps its own InferenceError, a server fault, to
    INVALID_ARGUMENT)."""

    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context: Any, method_name: str) -> None:
        rejection = client_error(ex)
        if rejection is not None:
            _, code = rejection
            log.warning("rejected gRPC %s: %s %s", method_name, code.name, ex)
            await context.abort(code, str(ex))
        elif isinstance(ex, AbortError):  # the handler already set the status
            raise ex
        elif isinstance(ex, GrpcException):
            await super().handle_exception(ex, request_or_iterator, context, method_name)
        else:
            log.error("server fault in gRPC %s", method_name, exc_info=ex)
            await context.abort(StatusCode.INTERNAL, f"internal server error ({type(ex).__name__})")
