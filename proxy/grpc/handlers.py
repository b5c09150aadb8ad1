"""Registers gRPC services (Gateway, Jobs, the OIP front) with request parsing that refuses bad bytes cleanly.

A generated ``add_GatewayServicer_to_server`` parses requests inside
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
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from tritonclient.grpc import service_pb2 as oip_pb

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import jobs_pb2 as jpb

GATEWAY: ServiceDescriptor = pb.DESCRIPTOR.services_by_name["Gateway"]
JOBS: ServiceDescriptor = jpb.DESCRIPTOR.services_by_name["Jobs"]
GATEWAY_SERVICE: str = GATEWAY.full_name
"""``switchyard.v1.Gateway``: the service name in method paths, health and reflection."""
JOBS_SERVICE: str = JOBS.full_name
"""``switchyard.v1.Jobs``."""
OIP: ServiceDescriptor = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
OIP_SERVICE: str = OIP.full_name
"""``inference.GRPCInferenceService``: the Open Inference Protocol (KServe v2 / Triton), tritonclient's descriptors."""


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
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await method(request, context)

    return handle


def _unary_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for response in method(request, context):
            yield response

    return handle


def _stream_stream(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
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


_HANDLERS: dict[tuple[bool, bool], tuple[Callable[..., Any], Callable[..., Any]]] = {
    # (client streaming, server streaming): (the guard, grpc's handler factory)
    (False, False): (_unary_unary, grpc.unary_unary_rpc_method_handler),
    (False, True): (_unary_stream, grpc.unary_stream_rpc_method_handler),
    (True, True): (_stream_stream, grpc.stream_stream_rpc_method_handler),
}


def add_service(servicer: Any, server: grpc.aio.Server, service: ServiceDescriptor) -> None:
    """Serves every method of ``service`` from the servicer's method of the same name, refusing malformed requests.

    Like a generated ``add_*Servicer_to_server``, built from the descriptor, so
    a method added to the contract needs only its servicer method (a missing
    one fails here, at start-up, naming it).
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:
            raise RuntimeError(f"{type(servicer).__name__} has no method for {service.full_name}/{method.name}")
        guard, factory = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            guard(behaviour),
            request_deserializer=_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
