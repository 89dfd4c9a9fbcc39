"""Wire SluiceModel into kserve.ModelServer: V2 REST and gRPC, errors as 4xx, limits, metrics on /metrics.

KServe 0.21's ModelServer.start() builds its uvicorn RESTServer and its GRPCServer inline. The runtime
keeps that sequence (one process) with its own parts plugged in where KServe has no hook:
- REST: the same uvicorn server, configured (listen host, idle timeout, a protocol with header
  limits), then, after KServe registered its routes and handlers, the runtime's V2 routes
  (serving.rest_routes), error handlers (serving.errors) and body limits (serving.http_limits).
- gRPC: serving.grpc_service, KServe's servicer and server with version checks and the error mapping.
- DataPlane: serving.dataplane, KServe's with the checks a REST body needs before it is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from serving.dataplane import SluiceDataPlane
from serving.errors import install_error_handlers, quiet_per_request_logs
from serving.grpc_service import SluiceGRPCServer
from serving.http_limits import DEFAULT_MAX_ROWS, BodyLimitsMiddleware, HttpLimits, protocol_for
from serving.metrics import ServingMetrics, multiprocess_dir, multiprocess_registry
from serving.model import SluiceModel
from serving.rest_routes import install_metrics_route, install_v2_routes
from serving.workers import is_worker, worker_socket

__all__ = ["GRACE_PERIOD", "ServeOptions", "SluiceDataPlane", "SluiceModelServer", "build", "install_error_handlers"]

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
    limits: HttpLimits = field(default_factory=HttpLimits)


class SluiceRESTServer(RESTServer):
    def __init__(
        self,
        dataplane: DataPlane,
        extension: ModelRepositoryExtension,
        http_port: int,
        *,
        host: str,
        limits: HttpLimits,
        grace_period: int,
    ):
        super().__init__(
            FASTAPI_APP_IMPORT_STRING,
            dataplane,
            extension,
            http_port,
            grace_period=grace_period,
            timeout_keep_alive=limits.idle_timeout,
        )
        self.limits = limits
        # uvicorn reads these when the server starts (Config.load), so they can still change here.
        self.config.host = host  # KServe hard-codes 0.0.0.0
        self.config.http = protocol_for(limits)

    def create_application(self) -> None:
        from kserve.model_server import app  # the module-level FastAPI app every RESTServer serves

        super().create_application()
        install_v2_routes(app, self.dataplane, self.model_repository_extension)
        if multiprocess_dir() is not None:
            install_metrics_route(app, multiprocess_registry())
        install_error_handlers(app, self.dataplane.model_registry)
        limits = self.limits
        app.add_middleware(BodyLimitsMiddleware, max_bytes=limits.max_body_bytes, seconds=limits.body_timeout)

    async def start(self) -> None:
        if not is_worker():
            await super().start()
            return
        # One of several workers (serving.workers): listen beside the others with SO_REUSEPORT.
        self.create_application()
        await self._server.serve(sockets=[worker_socket(self.config.host, self.config.port)])


class SluiceModelServer(ModelServer):
    """kserve.ModelServer with the runtime's REST and gRPC servers (see the module docstring)."""

    def __init__(self, host: str, limits: HttpLimits | None = None, **kwargs: Any):
        kwargs.setdefault("enable_latency_logging", False)  # a log line per request; the metrics have it
        super().__init__(**kwargs)
        self.host = host
        self.limits = limits or HttpLimits()
        self.dataplane = SluiceDataPlane(model_registry=self.registered_models)
        quiet_per_request_logs()

    def start(self, models: list[BaseKServeModel]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = SluiceRESTServer(
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            host=self.host,
            limits=self.limits,
            grace_period=self.grace_period,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = SluiceGRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                host=self.host,
                limits=self.limits,
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def build(options: ServeOptions, metrics: ServingMetrics | None = None) -> tuple[SluiceModelServer, SluiceModel]:
    # Knative sets K_REVISION in every pod (the local stand-in too): metrics carry the revision.
    metrics = metrics if metrics is not None else ServingMetrics(revision=os.environ.get("K_REVISION", ""))
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
        limits=options.limits,
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        # KServe's own multi-process mode stays off: `--workers` runs whole runtimes (serving.workers).
        workers=1,
        enable_grpc=True,
        enable_docs_url=False,
        grace_period=GRACE_PERIOD,
    )
    metrics.expose()
    return server, model


def serve(options: ServeOptions) -> int:
    """Load the model and serve until SIGTERM/SIGINT; returns the process exit code."""
    # KServe's loggers do not propagate, so a root handler for ours duplicates nothing.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server, model = build(options)
    log.info(
        "serving %s version %s from %s on http://%s:%d and grpc :%d (limits: %s)",
        model.name,
        model.version,
        options.model_dir,
        options.host,
        options.http_port,
        options.grpc_port,
        options.limits,
    )
    server.start([model])
    return 0
