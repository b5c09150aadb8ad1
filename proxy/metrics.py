"""Prometheus metrics of the gateway.

Requests by route and status code, end-to-end latency per route, latency per
stage (pre, infer, post), calls in flight and calls shed by a ``max_inflight``
bound, rows answered by route (a batch scorer's rows/s is its rate), and the
job queue (depth by state, job latency, attempts). The endpoint is served by
``start_metrics_server`` on its own port, bound to loopback unless configured
otherwise.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# Buckets from 0.5 ms to 30 s: the proxy's own stages sit at the low end,
# slow models and deadlines at the top.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

REQUESTS = Counter("switchyard_requests", "Requests answered, by route and gRPC status code.", ["route", "code"])
LATENCY = Histogram(
    "switchyard_request_latency_seconds", "End-to-end latency of requests, by route.", ["route"], buckets=_BUCKETS
)
STAGE_LATENCY = Histogram(
    "switchyard_stage_latency_seconds",
    "Latency of one stage (pre, infer, post) of a request, by route.",
    ["route", "stage"],
    buckets=_BUCKETS,
)
# ``multiprocess_mode`` says how ``serve --workers N`` adds up a gauge over its
# worker processes (server.workers); one process ignores it.
IN_FLIGHT = Gauge(
    "switchyard_inflight_requests", "Requests being processed now, by route.", ["route"], multiprocess_mode="livesum"
)
SHED = Counter(
    "switchyard_shed_requests",
    "Requests refused with RESOURCE_EXHAUSTED because a max_inflight bound was reached, "
    "by route and bound (reason: gateway or route).",
    ["route", "reason"],
)
BACKEND_READY = Gauge(
    "switchyard_backend_ready",
    "1 when every model of the route is ready in Triton (with several workers: as every live worker sees it).",
    ["route"],
    multiprocess_mode="livemin",
)
ROWS = Counter(
    "switchyard_rows",
    "Rows (the first dimension of a request's inputs) answered with OK, by route; its rate is a batch "
    "scorer's rows per second.",
    ["route"],
)


# -- the per-request paths ----------------------------------------------------------
#
# They use bound children: ``.labels()`` takes a lock and builds a key on every
# call, which the profile of the passthrough route showed. Labels are route
# names from the configuration (or one placeholder for unknown routes), stage
# names and status codes: a small, bounded set.
#
# Under ``switchyard serve`` the gateway runs in worker processes whose
# metrics are prometheus_client's multiprocess values: each update writes an
# mmap'd file after checking the process id, 2-3 times the cost of a plain
# one, and a call makes about ten. There the hot metrics are *deferred*: an
# update is a Python addition, and :func:`flush` (every ``FLUSH_S`` while a
# gateway runs, and when it stops) adds the sums to the shared values, so the
# supervisor's endpoint lags by at most that much. In one process (tests,
# embedded gateways) updates go straight to the registry, as before.

FLUSH_S = 0.5
"""How often deferred metrics reach the shared values, in worker processes."""

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ


class DeferredCounter:
    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._child.inc(pending)


class DeferredGauge:
    __slots__ = ("_child", "_value", "_written")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._value = 0.0
        self._written = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._value -= amount

    def flush(self) -> None:
        if self._value != self._written:
            self._written = self._value
            self._child.set(self._value)


class DeferredHistogram:
    """Bucket counts and a sum kept here; :meth:`flush` adds them to the child's own (its ``_buckets``, ``_sum``)."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        if not any(self._counts):
            return
        counts, self._counts = self._counts, [0] * len(self._bounds)
        for bucket, count in zip(self._child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        total, self._sum = self._sum, 0.0
        self._child._sum.inc(total)


_deferred: list[DeferredCounter | DeferredGauge | DeferredHistogram] = []
M = TypeVar("M")


def hot(child: M) -> M:
    """``child`` (a bound Counter, Gauge or Histogram), deferred in a worker process (see above)."""
    if not MULTIPROCESS:
        return child
    wrapper: DeferredCounter | DeferredGauge | DeferredHistogram
    if isinstance(child, Histogram):
        wrapper = DeferredHistogram(child)
    elif isinstance(child, Gauge):
        wrapper = DeferredGauge(child)
    else:
        wrapper = DeferredCounter(child)
    _deferred.append(wrapper)
    return wrapper  # type: ignore[return-value]  # the same update methods


def flush() -> None:
    """Adds what deferred metrics hold to the shared values."""
    for metric in _deferred:
        metric.flush()


async def flush_every(interval_s: float = FLUSH_S) -> None:
    """Flushes deferred metrics until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            flush()
    finally:
        flush()


class RouteMetrics:
    """One route's request metrics, bound once: a call updates them without looking its labels up."""

    __slots__ = ("_requests", "in_flight", "latency", "ok", "route", "rows")

    def __init__(self, route: str) -> None:
        self.route = route
        self.in_flight: Gauge = hot(IN_FLIGHT.labels(route))
        self.latency: Histogram = hot(LATENCY.labels(route))
        self.rows: Counter = hot(ROWS.labels(route))
        self._requests: dict[str, Counter] = {}
        self.ok: Counter = self.requests("OK")
        """``requests("OK")``, bound once."""

    def requests(self, code: str) -> Counter:
        """The route's request counter for status ``code`` (its name, e.g. ``"OK"``)."""
        counter = self._requests.get(code)
        if counter is None:
            counter = self._requests[code] = hot(REQUESTS.labels(self.route, code))
        return counter


@functools.cache
def route_metrics(route: str) -> RouteMetrics:
    return RouteMetrics(route)


@functools.cache
def stage_latency(route: str, stage: str) -> Histogram:
    return hot(STAGE_LATENCY.labels(route, stage))


# Asynchronous jobs (proxy.jobs). Job latency runs from submit to the end, so
# its buckets reach far past a request's.
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
JOBS = Gauge(
    "switchyard_jobs",
    "Jobs in the job store, by state (queue depth: state=QUEUED); read from the store, so every process "
    "sharing a store reports the same numbers.",
    ["state"],
    multiprocess_mode="livemax",
)
JOB_LATENCY = Histogram(
    "switchyard_job_latency_seconds",
    "Time from SubmitJob to the job's end, by terminal state (SUCCEEDED, FAILED, CANCELLED).",
    ["state"],
    buckets=_JOB_BUCKETS,
)
JOB_ATTEMPTS = Counter(
    "switchyard_job_attempts",
    "Job attempts started by this process's workers, by kind: first, redelivery (the previous worker's "
    "lease ran out) or retry (after a retryable error).",
    ["kind"],
)
JOB_COMPLETIONS = Counter(
    "switchyard_job_completions",
    "Job outcomes a worker tried to write, by result: written, or stale (its lease had been lost, so the "
    "outcome was discarded and the job's result stayed as another attempt wrote it).",
    ["result"],
)


def start_metrics_server(
    host: str, port: int, registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY
) -> int:
    """Serves ``registry`` as /metrics on ``host:port`` (0 picks a port) and returns the port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return int(server.server_address[1])
