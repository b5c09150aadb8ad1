"""The floor: the least a Python ``grpc.aio`` proxy in front of Triton can do.

Usage: ``python -m benchmarks.floor_proxy --upstream HOST:PORT [--host H] [--port P]``
(``--echo`` instead of ``--upstream``: answer every call at once with an empty message;
``--convert ROUTE=MODEL``: the converter, below).

One process, one uvloop event loop, one ``grpc.aio`` server with a generic
handler whose (de)serializers are the identity: a unary call's request bytes
(an Open Inference Protocol ``ModelInferRequest``, say) go to the same method
on the upstream over one long-lived channel without being parsed, and the
answer's bytes come back the same way. The caller's deadline is passed on and
an upstream error is returned with its status and message. Nothing else: no
validation, no routing, no metrics.

Whatever Switchyard adds over this floor is the price of what it does beyond
moving bytes; what the floor adds over calling Triton directly is the price of
a Python gRPC hop on this machine. ``--echo`` measures the load generator and
one Python gRPC server with no upstream at all (the ceiling of the instrument).

Every method is handled as unary-unary, so streaming methods are not
forwarded correctly (the benchmarks use unary calls only).

``--convert ROUTE=MODEL`` (repeatable) makes it the *converter*: the least a
proxy speaking Switchyard's contract can do. It serves
``switchyard.v1.Gateway/Infer`` only: parses the ``InferRequest``, builds
Triton's ``ModelInferRequest`` for the route's model from its tensors, calls
Triton, and builds the ``InferResponse`` from the reply; no validation,
admission, metrics, timings, retries or health. What the gateway spends over
the converter is the price of those; what the converter spends over the floor
is the price of the contract's messages.
Prints ``floor: serving on HOST:PORT`` once listening; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import uvloop

from switchyard.v1.channel import channel_options, server_options

DEFAULT_TIMEOUT_S = 30.0
"""Deadline given to the upstream call when the caller sent none."""

Behavior = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class ForwardingHandler(grpc.GenericRpcHandler):
    """Forwards any unary-unary method, as bytes, to the same method of ``channel``."""

    def __init__(self, channel: grpc.aio.Channel | None, convert: dict[str, str] | None = None) -> None:
        self._channel = channel
        self._convert = convert
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None and self._convert is not None:
            if method != GATEWAY_INFER or self._channel is None:
                return None  # UNIMPLEMENTED
            handler = self._handlers[method] = grpc.unary_unary_rpc_method_handler(
                _converter(self._channel, self._convert)
            )
        if handler is None:
            behavior = self._echo if self._channel is None else self._forwarder(self._channel, method)
            # No (de)serializers: the behavior gets and returns the message bytes as they are.
            handler = grpc.unary_unary_rpc_method_handler(behavior)
            self._handlers[method] = handler
        return handler

    @staticmethod
    async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    @staticmethod
    def _forwarder(channel: grpc.aio.Channel, method: str) -> Behavior:
        call = channel.unary_unary(method)  # no serializers: bytes in, bytes out

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await _relay(call, request, context)

        return forward


async def _relay(call: grpc.aio.UnaryUnaryMultiCallable, request: Any, context: grpc.aio.ServicerContext) -> Any:
    """``call``'s answer to ``request`` under the caller's deadline; an upstream error ends the call as it came."""
    remaining = context.time_remaining()
    try:
        return await call(request, timeout=DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 0.0))
    except grpc.aio.AioRpcError as exc:
        await context.abort(exc.code(), exc.details() or "")
        raise  # abort raises; this line is never reached


GATEWAY_INFER = "/switchyard.v1.Gateway/Infer"
TRITON_INFER = "/inference.GRPCInferenceService/ModelInfer"


def _converter(channel: grpc.aio.Channel, models: dict[str, str]) -> Behavior:
    """``Gateway/Infer`` by the least conversion to and from Triton's messages (see the module docstring)."""
    from tritonclient.grpc import service_pb2

    from switchyard.v1 import gateway_pb2

    call = channel.unary_unary(
        TRITON_INFER,
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )

    async def convert(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = gateway_pb2.InferRequest.FromString(data)
        upstream = service_pb2.ModelInferRequest(model_name=models.get(request.route, request.route))
        for tensor in request.inputs:
            upstream.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            upstream.raw_input_contents.append(tensor.raw_data)
        for name in request.outputs:
            upstream.outputs.add(name=name)
        reply = await _relay(call, upstream, context)
        response = gateway_pb2.InferResponse(route=request.route, request_id=request.request_id)
        for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
            response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape, raw_data=raw)
        response.models.add(name=reply.model_name, version=reply.model_version)
        return bytes(response.SerializeToString())

    return convert


async def serve(
    upstream: str | None, host: str, port: int, grace_s: float = 1.0, convert: dict[str, str] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT; ``upstream`` None answers every call with an empty message."""
    channel = None if upstream is None else grpc.aio.insecure_channel(upstream, options=channel_options())
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((ForwardingHandler(channel, convert),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor: serving on {host}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(grace_s)
        if channel is not None:
            await channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_proxy", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--upstream", help="host:port of the gRPC server to forward to (Triton)")
    mode.add_argument("--echo", action="store_true", help="answer every call at once with an empty message")
    parser.add_argument(
        "--convert",
        action="append",
        metavar="ROUTE=MODEL",
        help="serve Gateway/Infer by the least conversion, ROUTE's requests going to Triton's MODEL (repeatable)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    convert = None
    if args.convert:
        if args.echo:
            parser.error("--convert needs --upstream")
        pairs = [item.partition("=") for item in args.convert]
        if any(not route or not sep or not model for route, sep, model in pairs):
            parser.error("--convert takes ROUTE=MODEL")
        convert = {route: model for route, _, model in pairs}
    uvloop.run(serve(None if args.echo else args.upstream, args.host, args.port, convert=convert))
    return 0


if __name__ == "__main__":
    sys.exit(main())
