"""The floor: the least a Python ``grpc.aio`` proxy in front of Triton can do.

Usage: ``python -m benchmarks.floor_proxy --upstream HOST:PORT [--host H] [--port P]``
(``--echo`` instead of ``--upstream``: answer every call at once with an empty message).

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
Prints ``floor: serving on HOST:PORT`` once listening; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import grpc
import uvloop

from switchyard.v1.channel import channel_options, server_options

DEFAULT_TIMEOUT_S = 30.0
"""Deadline given to the upstream call when the caller sent none."""

Behavior = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class ForwardingHandler(grpc.GenericRpcHandler):
    """Forwards any unary-unary method, as bytes, to the same method of ``channel``."""

    def __init__(self, channel: grpc.aio.Channel | None) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
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
            remaining = context.time_remaining()
            timeout = DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 0.0)
            try:
                return await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")
                raise  # abort raises; this line is never reached

        return forward


async def serve(upstream: str | None, host: str, port: int, grace_s: float = 1.0) -> None:
    """Serve until SIGTERM or SIGINT; ``upstream`` None answers every call with an empty message."""
    channel = None if upstream is None else grpc.aio.insecure_channel(upstream, options=channel_options())
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((ForwardingHandler(channel),))
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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    uvloop.run(serve(None if args.echo else args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
