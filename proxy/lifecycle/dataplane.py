"""The one request lifecycle: every inference request goes through :class:`DataPlane`, whatever carried it.

A request's life, in order: admission (load shedding), its deadline (the
client's, else the default, capped by the route's), validation, the prediction
cache and request coalescing, the route, and on the way out the metrics, the
log line with the request id and the mapping of any failure to a
:class:`~switchyard.proxy.errors.GatewayError`. The transports turn answers
and errors into their own messages and statuses and do nothing else: the gRPC
servicer (``Infer``, each request of an ``InferStream``, ``InferProgressive``),
the job runner and the Open Inference Protocol front all call this module.

Load shedding: every inference request first takes a slot from the process's
:class:`~switchyard.proxy.lifecycle.admission.Admission`. Past
``max_inflight`` (the process's, or the route's own) it is refused with
``RESOURCE_EXHAUSTED`` at once, before validation or any backend work, and
counted in ``switchyard_shed_requests_total{route,reason}``.

Deadlines: every backend call ends for its caller at the call's deadline; on
top of that, nothing a request runs may outlive its deadline by more than
``DEADLINE_SLACK_S`` (a last resort for waits that are not backend calls, such
as joining a coalesced flight started by a caller with a later deadline). A
route whose only wait is the backend call (``Route.bounded_by_backend``) is
spared that second timer.

Unexpected exceptions become INTERNAL with a fixed message and the request
id; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from switchyard.proxy import metrics, tracing
from switchyard.proxy.cache import Cache
from switchyard.proxy.cache.prediction import PredictionCache
from switchyard.proxy.client_text import escaped
from switchyard.proxy.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    RouteNotFound,
    internal_error,
)
from switchyard.proxy.lifecycle.admission import Admission, Shed
from switchyard.proxy.lifecycle.context import CallContext, new_request_id
from switchyard.proxy.lifecycle.deadlines import DEADLINE_SLACK_S, call_timeout, own_timeout
from switchyard.proxy.lifecycle.validation import MAX_REQUEST_ID_LENGTH, RequestChecker
from switchyard.proxy.logs import request_fields
from switchyard.proxy.routes.base import Route
from switchyard.proxy.routes.progressive import ProgressiveRoute
from switchyard.proxy.routes.table import RouteTable
from switchyard.proxy.settings import GatewaySettings
from switchyard.v1 import gateway_pb2 as pb

log = logging.getLogger(__name__)

_OK = grpc.StatusCode.OK
UNKNOWN_ROUTE = "<unknown>"
"""The route label of requests naming no route served (metrics, logs)."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs three times as much, on every call
class Answer:
    """The outcome of one request: its response or its error, and the stage timings of the call."""

    response: pb.InferResponse | None
    error: GatewayError | None
    timing: str = ""
    """The stages as a Server-Timing style value (``name;start=ms;dur=ms, ...``); empty when none ran."""

    def outcome(self) -> pb.InferResponse | GatewayError:
        """The response, or the error."""
        if self.error is not None:
            return self.error
        assert self.response is not None
        return self.response


@dataclass(frozen=True, slots=True)
class StageAnswer:
    """One answer (or stage error) of a progressive call; ``final`` marks the last."""

    stage: str
    index: int
    final: bool
    response: pb.InferResponse | None = None
    error: GatewayError | None = None
    timing: str = ""
    """Set on the final answer only."""


class _Call:
    """One request's bookkeeping: its label, its admission slot, its metrics and the mapping of its failure."""

    __slots__ = ("_plane", "code", "label", "metrics", "request_id", "route", "rows", "started")

    def __init__(self, plane: DataPlane, request: pb.InferRequest) -> None:
        self._plane = plane
        name = request.route
        self.route = plane.routes.find(name)
        """The route the request names; None when no route of that name is served."""
        self.label = UNKNOWN_ROUTE if self.route is None else name
        self.metrics = metrics.route_metrics(self.label)
        self.started = time.monotonic()
        self.code = _OK
        self.request_id = request.request_id or new_request_id()
        self.rows = 0
        """The request's rows, once validated (counted when it succeeds)."""

    def admit(self) -> Shed | None:
        """Takes an admission slot; the shed error (already counted and ended) when none is free.

        Called before validation: a shed request costs a dictionary lookup.
        An admitted call must be ended with :meth:`end`.
        """
        limit = self.route.description.max_inflight if self.route is not None else None
        try:
            self._plane.admission.admit(self.label, limit)
        except Shed as exc:
            metrics.SHED.labels(self.label, exc.reason).inc()
            self.metrics.requests(exc.code.name).inc()
            self.metrics.latency.observe(time.monotonic() - self.started)
            log.debug("request on route %s shed: %s", self.label, exc.message)
            return exc
        self.metrics.in_flight.inc()
        return None

    def context(self, route: Route, request: pb.InferRequest, client_remaining: float | None) -> CallContext:
        settings = self._plane.settings
        remaining = own_timeout(client_remaining, request.timeout_ms)
        timeout = call_timeout(remaining, settings.default_timeout_s, route.description.timeout_s)
        started = self.started
        return CallContext(self.request_id, self.label, started + timeout, started=started)

    def failed(self, exc: Exception) -> GatewayError:
        """The error the client sees for ``exc``, logged; a BackendUnavailable also tells health."""
        if isinstance(exc, GatewayError):
            self.code = exc.code
            if isinstance(exc, BackendUnavailable):
                self._plane.on_backend_down()
            log.info(
                "request %s on route %s failed: %s %s",
                escaped(self.request_id, MAX_REQUEST_ID_LENGTH),
                self.label,
                exc.code.name,
                exc.message,
                extra=self._fields(),
            )
            return exc
        self.code = grpc.StatusCode.INTERNAL
        log.exception(
            "request %s on route %s failed unexpectedly",
            escaped(self.request_id, MAX_REQUEST_ID_LENGTH),
            self.label,
            extra=self._fields(),
        )
        return internal_error(self.request_id)

    def _fields(self) -> dict[str, object]:
        return request_fields(self.label, self.request_id, self.code.name, time.monotonic() - self.started)

    def end(self) -> None:
        """Gives the admission slot back and records the outcome."""
        label = self.label
        self._plane.admission.release(label)
        bound = self.metrics
        bound.in_flight.dec()
        bound.latency.observe(time.monotonic() - self.started)
        code = self.code
        if code is _OK:
            bound.ok.inc()
            if self.rows:
                bound.rows.inc(self.rows)
        else:
            bound.requests(code.name).inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request %s on route %s: %s", self.request_id, label, code.name, extra=self._fields())
        if tracing.tracer is not None:
            tracing.call_ended(code.name)


class DataPlane:
    """Runs inference requests against the routes of one gateway process (see the module docstring)."""

    def __init__(
        self,
        routes: RouteTable,
        settings: GatewaySettings,
        *,
        cache: Cache | None = None,
        on_backend_down: Callable[[], None] = lambda: None,
    ) -> None:
        self.routes = routes
        self.settings = settings
        self.admission = Admission(settings.max_inflight)
        self.on_backend_down = on_backend_down
        self._answers = PredictionCache(cache, op_timeout_s=settings.cache_op_timeout_s)
        self._checkers: dict[str, tuple[Route, RequestChecker]] = {}

    def validate(self, request: pb.InferRequest) -> None:
        """Checks ``request`` as :meth:`infer` does before any backend call; raises RouteNotFound or InvalidInput."""
        self._check(request, self.routes.get(request.route))

    def _check(self, request: pb.InferRequest, route: Route) -> int:
        """Validates ``request`` for ``route`` with the route's checker, made once per route object; its rows."""
        known = self._checkers.get(route.name)
        if known is None or known[0] is not route:
            known = self._checkers[route.name] = (route, _checker(route))
        if request.cancel:
            raise InvalidInput("cancel", "withdraws a request on InferStream only; this call has nothing to withdraw")
        return known[1].check(request)

    async def infer(self, request: pb.InferRequest, client_remaining: float | None) -> Answer:
        """Runs ``request``; ``client_remaining`` is the caller's time left in seconds (None: the default)."""
        call = _Call(self, request)
        with tracing.call_span(call.label, call.request_id):
            shed = call.admit()
            if shed is not None:
                return Answer(None, shed)
            try:
                route = call.route
                if route is None:
                    raise RouteNotFound(request.route)
                ctx = call.context(route, request, client_remaining)
                if tracing.tracer is None:
                    call.rows = self._check(request, route)
                else:
                    with tracing.span("validate"):
                        call.rows = self._check(request, route)
                if route.bounded_by_backend and not route.coalesce:
                    if route.cache_ttl_s is None:  # nothing for the prediction cache to do
                        response = await route.infer(request, ctx)
                    else:
                        response = await self._answers.answer(route, request, ctx)
                else:
                    bound = asyncio.timeout(max(ctx.remaining(), 0.0) + DEADLINE_SLACK_S)
                    try:
                        async with bound:
                            response = await self._answers.answer(route, request, ctx)
                    except TimeoutError:
                        if not bound.expired():
                            raise
                        raise DeadlineExceeded(f"deadline exceeded on route {route.name!r}") from None
                return Answer(response, None, ctx.timing_header() if ctx.spans else "")
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                return Answer(None, call.failed(exc))
            finally:
                call.end()

    async def progressive(
        self, request: pb.InferRequest, client_remaining: float | None
    ) -> AsyncIterator[StageAnswer | GatewayError]:
        """A progressive route's answers, stage by stage; other kinds answer once, final.

        A :class:`GatewayError` item fails the whole call (shed, invalid input,
        deadline before every stage answered) and is the last item; a stage's
        own failure is a :class:`StageAnswer` with its error.
        """
        route = self.routes.get(request.route) if request.route in self.routes else None
        if not isinstance(route, ProgressiveRoute):
            answer = await self.infer(request, client_remaining)
            if answer.error is not None:
                yield answer.error
                return
            yield StageAnswer(request.route, 0, True, response=answer.response, timing=answer.timing)
            return
        call = _Call(self, request)
        with tracing.call_span(call.label, call.request_id):
            shed = call.admit()
            if shed is not None:
                yield shed
                return
            answered = False
            failure: GatewayError | None = None
            try:
                ctx = call.context(route, request, client_remaining)
                call.rows = self._check(request, route)
                async with asyncio.timeout(max(ctx.remaining(), 0.0)):
                    async for index, outcome, final in route.answers(request, ctx):
                        stage = route.stages[index].name
                        timing = ctx.timing_header() if final else ""
                        if isinstance(outcome, GatewayError):
                            if final and not answered:
                                call.code = outcome.code
                            yield StageAnswer(stage, index, final, error=outcome, timing=timing)
                        else:
                            answered = True
                            yield StageAnswer(stage, index, final, response=outcome, timing=timing)
            except TimeoutError:
                failure = call.failed(DeadlineExceeded("deadline exceeded before every stage answered"))
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except GeneratorExit:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                failure = call.failed(exc)
            finally:
                call.end()
            if failure is not None:
                yield failure

    async def close(self) -> None:
        """Cancels coalesced flights still running (shutdown)."""
        await self._answers.close()


def _checker(route: Route) -> RequestChecker:
    description = route.description
    return RequestChecker(
        description.inputs,
        description.outputs,
        models=description.model_names,
        max_batch_size=description.max_batch_size,
        max_request_bytes=description.max_request_bytes,
        allow_non_finite=route.allow_non_finite,
    )
