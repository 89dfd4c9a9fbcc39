"""The V2 gRPC service: KServe 0.21's servicer and server with the runtime's checks and error mapping.

KServe's GRPCServer builds its servicer and interceptors inside start() with no hook, so this is the
same start() with these parts:
- ModelInfer: a `model_version` other than the served one is NOT_FOUND (KServe serves any); datatypes
  are checked as sent (KServe upper-cases them); what fails before the model is counted for it.
- ModelMetadata carries `versions` (KServe drops them); ModelMetadata/ModelReady check the version.
- GrpcErrorInterceptor: one log line per rejection, INTERNAL only for server faults.
- Options: the message limit is the HTTP body limit; idle connections close after the idle timeout.
- Binds to the runtime's --host like HTTP (KServe always binds [::]).
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

from grpc import ServicerContext, aio
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.utils.utils import to_headers

from serving.decode import check_datatype_names
from serving.errors import GrpcErrorInterceptor, record_rejected
from serving.http_limits import HttpLimits
from serving.versions import check_version, served_versions


class SluiceServicer(InferenceServicer):
    def __init__(self, data_plane: DataPlane, extension: ModelRepositoryExtension):
        super().__init__(data_plane, extension)
        self.registry = data_plane.model_registry

    async def ModelInfer(self, request: pb.ModelInferRequest, context: ServicerContext) -> pb.ModelInferResponse:
        check_version(self.registry, request.model_name, request.model_version)
        try:
            check_datatype_names((i.name, i.datatype) for i in request.inputs)
            self.validate_grpc_request(request)
            infer_request = InferRequest.from_grpc(request)
        except InvalidInput:
            record_rejected(self.registry, request.model_name)
            raise
        except Exception:
            record_rejected(self.registry, request.model_name, "error")
            raise
        response, _ = await self._data_plane.infer(
            request=infer_request, headers=to_headers(context), model_name=request.model_name
        )
        if isinstance(response, InferResponse):
            return response.to_grpc()
        if isinstance(response, pb.ModelInferResponse):
            return response
        raise TypeError(f"the model returned {type(response).__name__}, not a V2 response")

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        check_version(self.registry, request.name, request.version)
        response = await super().ModelMetadata(request, context)
        response.versions.extend(served_versions(self.registry.get_model(request.name)))
        return response

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        check_version(self.registry, request.name, request.version)
        return await super().ModelReady(request, context)


class SluiceGRPCServer(GRPCServer):
    def __init__(
        self,
        port: int,
        data_plane: DataPlane,
        extension: ModelRepositoryExtension,
        *,
        host: str,
        limits: HttpLimits,
        grace_period: int,
    ):
        super().__init__(port, data_plane, extension, kwargs={}, grace_period=grace_period)
        self._host = host
        self._limits = limits

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(GrpcErrorInterceptor(),),
            options=[
                ("grpc.max_receive_message_length", self._limits.max_body_bytes),
                ("grpc.max_send_message_length", -1),  # responses are bounded by the row limit
                ("grpc.max_connection_idle_ms", int(self._limits.idle_timeout * 1000)),
            ],
        )
        servicer = SluiceServicer(self._data_plane, self._model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(grpc_address(self._host, self._port))
        await self._server.start()
        await self._server.wait_for_termination()


def grpc_address(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        return f"[::]:{port}"  # all interfaces, IPv4 and IPv6, as KServe binds
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
