"""The V2 REST routes the runtime serves differently from KServe 0.21's.

- `/v2/models/{m}/versions/{v}/infer`, `.../versions/{v}` and `.../versions/{v}/ready`: KServe answers
  501 for any version; here the served version is served and any other is a 404 (serving.versions).
- `/metrics`, when the runtime runs as several workers: the sum of every worker's metrics
  (serving.metrics multiprocess mode) instead of this process's own.
- Infer responses leave out fields that are null (`"parameters": null` on the response and each
  output): the spec makes `parameters` an optional object, and strict clients reject null there.

Each handler delegates to KServe's own V2Endpoints; only the wrapping differs. Installed after KServe
registered its routes, ahead of them: Starlette takes the first route that matches, so KServe's routes
for the same paths are never reached.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v2_datamodels import InferenceRequest, ModelMetadataResponse, ModelReadyResponse
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from prometheus_client import CollectorRegistry, exposition
from pydantic import BaseModel

from serving.versions import check_version

INFER = "/v2/models/{model_name}/infer"
INFER_VERSION = "/v2/models/{model_name}/versions/{model_version}/infer"
METADATA_VERSION = "/v2/models/{model_name}/versions/{model_version}"
READY_VERSION = "/v2/models/{model_name}/versions/{model_version}/ready"


def install_v2_routes(app: FastAPI, dataplane: DataPlane, extension: ModelRepositoryExtension | None) -> None:
    endpoints = V2Endpoints(dataplane, extension)
    registry = dataplane.model_registry

    async def infer(
        raw_request: Request, raw_response: Response, model_name: str, request_body: InferenceRequest | bytes
    ) -> Response:
        result = await endpoints.infer(raw_request, raw_response, model_name, request_body)
        return _without_nulls(result, raw_response)

    async def infer_version(
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        model_version: str,
        request_body: InferenceRequest | bytes,
    ) -> Response:
        check_version(registry, model_name, model_version)
        result = await endpoints.infer(raw_request, raw_response, model_name, request_body)
        return _without_nulls(result, raw_response)

    async def metadata_version(model_name: str, model_version: str) -> ModelMetadataResponse:
        check_version(registry, model_name, model_version)
        return await endpoints.model_metadata(model_name)

    async def ready_version(model_name: str, model_version: str) -> ModelReadyResponse:
        check_version(registry, model_name, model_version)
        return await endpoints.model_ready(model_name)

    routes: list[tuple[str, Any, str, dict[str, Any]]] = [
        (INFER, infer, "POST", {"response_model": None}),
        (INFER_VERSION, infer_version, "POST", {"response_model": None}),
        (METADATA_VERSION, metadata_version, "GET", {"response_model": ModelMetadataResponse}),
        (READY_VERSION, ready_version, "GET", {"response_model": ModelReadyResponse}),
    ]
    before = len(app.router.routes)
    for path, endpoint, method, options in routes:
        app.add_api_route(path, endpoint, methods=[method], tags=["V2"], **options)
    _move_to_front(app, before)


def _move_to_front(app: FastAPI, before: int) -> None:
    """Move the routes added since `before` in front of KServe's."""
    # FastAPI 0.165 keeps KServe's included routers as single entries; move ours in front of them.
    ours = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = ours


def _without_nulls(result: Any, raw_response: Response) -> Response:
    if isinstance(result, Response):  # the binary extension: KServe built the response itself
        return result
    assert isinstance(result, BaseModel)
    # The headers the model added (KServe put them on the sub-response, which a returned Response replaces).
    return Response(
        orjson.dumps(result.model_dump(exclude_none=True)),
        media_type="application/json",
        headers=dict(raw_response.headers),
    )


def install_metrics_route(app: FastAPI, registry: CollectorRegistry) -> None:
    """Serve `registry` on /metrics ahead of KServe's route (which serves this process's REGISTRY)."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
        return Response(content=encoder(registry), headers={"content-type": content_type})

    before = len(app.router.routes)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    _move_to_front(app, before)
