"""The ``switchyard.v1.Gateway`` service: gRPC in, routes out.

Owns the request's life cycle around a route: deadline (the client's, else
the default, capped by the route's), validation, metrics, logging with the
request id, and the single place where domain errors become gRPC statuses.
Unexpected exceptions become INTERNAL with a fixed message and the request
id; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from switchyard.proxy import metrics
from switchyard.proxy.context import CallContext, new_request_id
from switchyard.proxy.errors import BackendUnavailable, GatewayError, internal_error
from switchyard.proxy.health import HealthMonitor
from switchyard.proxy.routes import RouteTable
from switchyard.proxy.settings import GatewaySettings
from switchyard.proxy.validation import check_request
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

UNKNOWN_ROUTE = "<unknown>"


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, routes: RouteTable, settings: GatewaySettings, health: HealthMonitor) -> None:
        self._routes = routes
        self._settings = settings
        self._health = health

    # -- unary --------------------------------------------------------------

    async def Infer(self, request: pb.InferRequest, context: grpc.aio.ServicerContext) -> pb.InferResponse:  # noqa: N802
        outcome = await self._answer(request, context.time_remaining())
        if isinstance(outcome, GatewayError):
            await context.abort(outcome.code, outcome.message)
        return outcome

    async def ListRoutes(  # noqa: N802
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoutesResponse:
        return pb.ListRoutesResponse(routes=[r.description.to_proto() for r in self._routes])

    async def GetRoute(self, request: pb.GetRouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteInfo:  # noqa: N802
        try:
            return self._routes.get(request.name).description.to_proto()
        except GatewayError as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    # -- streaming ----------------------------------------------------------

    async def InferStream(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.InferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamInferResponse]:
        """Answers each request as soon as it is done; at most ``stream_max_inflight`` at once."""
        results: asyncio.Queue[pb.StreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._settings.stream_max_inflight)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.InferRequest) -> None:
            try:
                outcome = await self._answer(request, context.time_remaining())
                if isinstance(outcome, GatewayError):
                    message = pb.StreamInferResponse(
                        request_id=request.request_id,
                        error=pb.Status(code=outcome.code.value[0], message=outcome.message),
                    )
                else:
                    message = pb.StreamInferResponse(request_id=outcome.request_id, response=outcome)
                await results.put(message)
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    if not request.request_id:
                        # Assigned here so that an error can be matched too.
                        request.request_id = new_request_id()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                await results.put(None)

        reader = asyncio.create_task(read())
        try:
            while (message := await results.get()) is not None:
                yield message
            await reader
        finally:
            # The client went away or the deadline passed: stop the reader and
            # cancel every backend call still running for this stream.
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    # -- the request life cycle ---------------------------------------------

    def _timeout(self, client_remaining: float | None, route_timeout: float | None) -> float:
        timeout = client_remaining if client_remaining is not None else self._settings.default_timeout_s
        if route_timeout is not None:
            timeout = min(timeout, route_timeout)
        return timeout

    async def _answer(
        self, request: pb.InferRequest, client_remaining: float | None
    ) -> pb.InferResponse | GatewayError:
        label = request.route if request.route in self._routes else UNKNOWN_ROUTE
        started = time.monotonic()
        ctx = CallContext.start(request.request_id, label, self._timeout(client_remaining, None))
        code = grpc.StatusCode.OK
        metrics.IN_FLIGHT.labels(label).inc()
        try:
            route = self._routes.get(request.route)
            description = route.description
            ctx.deadline = started + self._timeout(client_remaining, description.timeout_s)
            check_request(
                request,
                description.inputs,
                description.outputs,
                models=description.model_names,
                max_batch_size=description.max_batch_size,
                max_request_bytes=description.max_request_bytes,
            )
            return await route.infer(request, ctx)
        except GatewayError as exc:
            code = exc.code
            if isinstance(exc, BackendUnavailable):
                self._health.mark_backend_down()
            log.info("request %s on route %s failed: %s %s", ctx.request_id, label, code.name, exc.message)
            return exc
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("request %s on route %s failed unexpectedly", ctx.request_id, label)
            return internal_error(ctx.request_id)
        finally:
            metrics.IN_FLIGHT.labels(label).dec()
            metrics.REQUESTS.labels(label, code.name).inc()
            metrics.LATENCY.labels(label).observe(time.monotonic() - started)
