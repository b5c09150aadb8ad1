"""Registers the Gateway and Jobs services with request parsing that refuses bad bytes cleanly.

The generated ``add_GatewayServicer_to_server`` parses requests inside
grpcio; bytes that are not a valid message then end as ``UNKNOWN`` with a
traceback in the server log. Here parsing failures become a ``Malformed``
value that the handlers answer with ``INVALID_ARGUMENT`` (naming the message
type), so hostile or corrupted input is an input error like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import jobs_pb2 as jpb

GATEWAY_SERVICE: str = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
"""``switchyard.v1.Gateway``: the service name in method paths, health and reflection."""
JOBS_SERVICE: str = jpb.DESCRIPTOR.services_by_name["Jobs"].full_name
"""``switchyard.v1.Jobs``."""


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request whose bytes did not parse."""

    message: str
    route: str = ""
    request_id: str = ""


def _parser(message_type: type[Message]) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Malformed(f"request is not a valid {name} message ({exc})")

    return parse


def _unary_unary(method: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await method(request, context)

    return handle


def _unary_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for response in method(request, context):
            yield response

    return handle


def _stream_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        bad: list[Malformed] = []

        async def parsed() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, Malformed):
                    bad.append(request)  # answer what came before, then fail the stream
                    return
                yield request

        async for response in method(parsed(), context):
            yield response
        if bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad[0].message)

    return handle


def add_gateway_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Like the generated ``add_GatewayServicer_to_server``, with clean refusals of malformed requests."""
    handlers = {
        "Infer": grpc.unary_unary_rpc_method_handler(
            _unary_unary(servicer.Infer),
            request_deserializer=_parser(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString,
        ),
        "InferStream": grpc.stream_stream_rpc_method_handler(
            _stream_stream(servicer.InferStream),
            request_deserializer=_parser(pb.InferRequest),
            response_serializer=pb.StreamInferResponse.SerializeToString,
        ),
        "InferProgressive": grpc.unary_stream_rpc_method_handler(
            _unary_stream(servicer.InferProgressive),
            request_deserializer=_parser(pb.InferRequest),
            response_serializer=pb.ProgressiveResponse.SerializeToString,
        ),
        "ListRoutes": grpc.unary_unary_rpc_method_handler(
            _unary_unary(servicer.ListRoutes),
            request_deserializer=_parser(pb.ListRoutesRequest),
            response_serializer=pb.ListRoutesResponse.SerializeToString,
        ),
        "GetRoute": grpc.unary_unary_rpc_method_handler(
            _unary_unary(servicer.GetRoute),
            request_deserializer=_parser(pb.GetRouteRequest),
            response_serializer=pb.RouteInfo.SerializeToString,
        ),
    }
    missing = set(pb.DESCRIPTOR.services_by_name["Gateway"].methods_by_name) - set(handlers)
    if missing:
        raise RuntimeError(f"Gateway methods without a handler: {sorted(missing)}")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GATEWAY_SERVICE, handlers),))
    server.add_registered_method_handlers(GATEWAY_SERVICE, handlers)


def add_jobs_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Like the generated ``add_JobsServicer_to_server``, with clean refusals of malformed requests."""

    def unary(name: str, request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            _unary_unary(getattr(servicer, name)),
            request_deserializer=_parser(request),
            response_serializer=response.SerializeToString,
        )

    handlers = {
        "SubmitJob": unary("SubmitJob", jpb.SubmitJobRequest, jpb.SubmitJobResponse),
        "GetJob": unary("GetJob", jpb.GetJobRequest, jpb.Job),
        "WatchJob": grpc.unary_stream_rpc_method_handler(
            _unary_stream(servicer.WatchJob),
            request_deserializer=_parser(jpb.WatchJobRequest),
            response_serializer=jpb.Job.SerializeToString,
        ),
        "CancelJob": unary("CancelJob", jpb.CancelJobRequest, jpb.Job),
        "ListJobs": unary("ListJobs", jpb.ListJobsRequest, jpb.ListJobsResponse),
    }
    missing = set(jpb.DESCRIPTOR.services_by_name["Jobs"].methods_by_name) - set(handlers)
    if missing:
        raise RuntimeError(f"Jobs methods without a handler: {sorted(missing)}")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(JOBS_SERVICE, handlers),))
    server.add_registered_method_handlers(JOBS_SERVICE, handlers)
