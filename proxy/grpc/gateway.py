"""The ``switchyard.v1.Gateway`` service: gRPC in, routes out.

Owns the request's life cycle around a route: admission (load shedding),
deadline (the client's, else the default, capped by the route's), validation,
metrics, logging with the request id, and the single place where domain
errors become gRPC statuses. Unexpected exceptions become INTERNAL with a
fixed message and the request id; the traceback goes to the log, never to the
client.

Load shedding: every inference request (``Infer``, ``InferProgressive``, each
request of an ``InferStream``) first takes a slot from the process's
:class:`~switchyard.proxy.lifecycle.admission.Admission`. Past ``max_inflight`` (the
process's, or the route's own) it is answered ``RESOURCE_EXHAUSTED`` at once,
before validation or any backend work, and counted in
``switchyard_shed_requests_total{route,reason}``; a shed stream request gets
its error on the stream, the stream goes on.

Deadlines: every backend call carries the call's remaining time as its gRPC
timeout; on top of that, nothing a unary request runs may outlive its
deadline by more than ``DEADLINE_SLACK_S`` (a last resort for waits that are
not backend calls, such as joining a coalesced flight started by a caller
with a later deadline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from switchyard.proxy import metrics
from switchyard.proxy.cache import Cache, Coalescer, cache_key
from switchyard.proxy.errors import BackendUnavailable, DeadlineExceeded, GatewayError, internal_error
from switchyard.proxy.grpc.health import HealthMonitor
from switchyard.proxy.lifecycle.admission import Admission, Shed
from switchyard.proxy.lifecycle.context import CallContext, new_request_id
from switchyard.proxy.lifecycle.validation import check_request
from switchyard.proxy.routes.table import ProgressiveRoute, Route, RouteTable
from switchyard.proxy.settings import GatewaySettings
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

UNKNOWN_ROUTE = "<unknown>"

DEADLINE_SLACK_S = 0.1
"""How long past its deadline a request's work may run before the service gives up on it.

The backend call's own gRPC timeout ends at the deadline and reports which
model was late; this bound only catches what has no timeout of its own.
"""


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self, routes: RouteTable, settings: GatewaySettings, health: HealthMonitor, *, cache: Cache | None = None
    ) -> None:
        self._routes = routes
        self._settings = settings
        self._health = health
        self._cache = cache
        self._coalescer = Coalescer()
        self.admission = Admission(settings.max_inflight)

    # -- unary --------------------------------------------------------------

    async def Infer(self, request: pb.InferRequest, context: grpc.aio.ServicerContext) -> pb.InferResponse:  # noqa: N802
        outcome = await self._answer(request, context.time_remaining(), context)
        if isinstance(outcome, GatewayError):
            await context.abort(outcome.code, outcome.message)
            raise AssertionError("unreachable: abort raises")
        return outcome

    async def InferProgressive(  # noqa: N802
        self, request: pb.InferRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProgressiveResponse]:
        """A progressive route's answers, stage by stage; other kinds answer once, final."""
        if request.route in self._routes and isinstance(route := self._routes.get(request.route), ProgressiveRoute):
            async for message in self._progressive(route, request, context):
                yield message
            return
        outcome = await self._answer(request, context.time_remaining(), context)
        if isinstance(outcome, GatewayError):
            await context.abort(outcome.code, outcome.message)
            raise AssertionError("unreachable: abort raises")
        yield pb.ProgressiveResponse(stage=request.route, stage_index=0, final=True, response=outcome)

    async def _progressive(
        self, route: ProgressiveRoute, request: pb.InferRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProgressiveResponse]:
        label = route.name
        started = time.monotonic()
        ctx = CallContext.start(
            request.request_id, label, self._timeout(context.time_remaining(), route.description.timeout_s)
        )
        shed = self._admit(label, started)
        if shed is not None:
            await context.abort(shed.code, shed.message)
            raise AssertionError("unreachable: abort raises")
        code = grpc.StatusCode.OK
        metrics.in_flight(label).inc()
        answered = False
        try:
            self._check(request, route)
            async with asyncio.timeout(max(ctx.remaining(), 0.0)):
                async for index, outcome, final in route.answers(request, ctx):
                    stage = route.stages[index].name
                    if isinstance(outcome, GatewayError):
                        status = pb.Status(code=outcome.code.value[0], message=outcome.message)
                        yield pb.ProgressiveResponse(stage=stage, stage_index=index, final=final, error=status)
                        if final and not answered:
                            code = outcome.code
                    else:
                        answered = True
                        yield pb.ProgressiveResponse(stage=stage, stage_index=index, final=final, response=outcome)
            context.set_trailing_metadata((("switchyard-timing", ctx.timing_header()),))
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, "deadline exceeded before every stage answered")
        except GatewayError as exc:
            code = exc.code
            log.info("request %s on route %s failed: %s %s", ctx.request_id, label, code.name, exc.message)
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.admission.release(label)
            metrics.in_flight(label).dec()
            metrics.requests(label, code.name).inc()
            metrics.latency(label).observe(time.monotonic() - started)

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

    # -- for the job workers (proxy.jobs) -----------------------------------

    def validate(self, request: pb.InferRequest) -> None:
        """Checks ``request`` as Infer does before any backend call; raises RouteNotFound or InvalidInput."""
        self._check(request, self._routes.get(request.route))

    async def execute(self, request: pb.InferRequest, timeout_s: float) -> pb.InferResponse | GatewayError:
        """Runs ``request`` as Infer does (admission, validation, cache, metrics) within ``timeout_s``."""
        return await self._answer(request, timeout_s)

    # -- the request life cycle ---------------------------------------------

    def _admit(self, label: str, started: float) -> Shed | None:
        """Takes an admission slot for a request of route ``label``; the shed error (counted) if none is free.

        Called before validation: a shed request costs a dictionary lookup.
        A request admitted here must call ``self.admission.release(label)``.
        """
        limit = self._routes.get(label).description.max_inflight if label in self._routes else None
        try:
            self.admission.admit(label, limit)
        except Shed as exc:
            metrics.SHED.labels(label, exc.reason).inc()
            metrics.requests(label, exc.code.name).inc()
            metrics.latency(label).observe(time.monotonic() - started)
            log.debug("request on route %s shed: %s", label, exc.message)
            return exc
        return None

    def _timeout(self, client_remaining: float | None, route_timeout: float | None) -> float:
        timeout = client_remaining if client_remaining is not None else self._settings.default_timeout_s
        if route_timeout is not None:
            timeout = min(timeout, route_timeout)
        return timeout

    def _check(self, request: pb.InferRequest, route: Route) -> None:
        description = route.description
        check_request(
            request,
            description.inputs,
            description.outputs,
            models=description.model_names,
            max_batch_size=description.max_batch_size,
            max_request_bytes=description.max_request_bytes,
            allow_non_finite=route.allow_non_finite,
        )

    async def _run(self, route: Route, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        """The route's answer, through the prediction cache and request coalescing where the route has them."""
        cache = self._cache if route.cache_ttl_s is not None else None
        if cache is None and not route.coalesce:
            return await route.infer(request, ctx)
        key = cache_key(route.name, route.answer_key_part(request), request.inputs, request.outputs)
        if cache is not None and not request.bypass_cache:
            stored = await cache.get(
                key, route=route.name, timeout_s=min(ctx.remaining(), self._settings.cache_op_timeout_s)
            )
            if stored is not None:
                response = pb.InferResponse.FromString(stored)
                response.request_id = ctx.request_id
                response.cached = True
                return response

        async def compute() -> pb.InferResponse:
            response = await route.infer(request, ctx)
            # Stored before the flight ends, so a request arriving just after
            # it finds the answer in the cache rather than calling the backend.
            if cache is not None and not response.missing:
                stored = response.SerializeToString()
                await cache.set(key, stored, route.cache_ttl_s, timeout_s=self._settings.cache_op_timeout_s)
            return response

        if not route.coalesce or request.bypass_cache:
            return await compute()
        shared, _joined = await self._coalescer.run(key, compute, route=route.name)
        response = pb.InferResponse()
        response.CopyFrom(shared)
        response.request_id = ctx.request_id
        return response

    async def _answer(
        self,
        request: pb.InferRequest,
        client_remaining: float | None,
        context: grpc.aio.ServicerContext | None = None,
    ) -> pb.InferResponse | GatewayError:
        label = request.route if request.route in self._routes else UNKNOWN_ROUTE
        started = time.monotonic()
        shed = self._admit(label, started)
        if shed is not None:
            return shed
        ctx = CallContext.start(request.request_id, label, self._timeout(client_remaining, None))
        code = grpc.StatusCode.OK
        metrics.in_flight(label).inc()
        try:
            route = self._routes.get(request.route)
            description = route.description
            ctx.deadline = started + self._timeout(client_remaining, description.timeout_s)
            self._check(request, route)
            bound = asyncio.timeout(max(ctx.remaining(), 0.0) + DEADLINE_SLACK_S)
            try:
                async with bound:
                    response = await self._run(route, request, ctx)
            except TimeoutError:
                if not bound.expired():
                    raise
                raise DeadlineExceeded(f"deadline exceeded on route {route.name!r}") from None
            if context is not None and ctx.spans:
                context.set_trailing_metadata((("switchyard-timing", ctx.timing_header()),))
            return response
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
            self.admission.release(label)
            metrics.in_flight(label).dec()
            metrics.requests(label, code.name).inc()
            metrics.latency(label).observe(time.monotonic() - started)
            if code is grpc.StatusCode.OK and request.inputs and request.inputs[0].shape:
                metrics.rows(label).inc(request.inputs[0].shape[0])
