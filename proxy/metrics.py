"""Prometheus metrics of the gateway.

Requests by route and status code, end-to-end latency per route, latency per
stage (pre, infer, post), calls in flight and calls shed by a ``max_inflight``
bound, rows answered by route (a batch scorer's rows/s is its rate), and the
job queue (depth by state, job latency, attempts). The endpoint is served by
``start_metrics_server`` on its own port, bound to loopback unless configured
otherwise.
"""

from __future__ import annotations

import functools

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


# The per-request paths use these bound children: ``.labels()`` takes a lock and
# builds a key on every call, which the profile of the passthrough route showed.
# Labels are route names from the configuration (or one placeholder for unknown
# routes), stage names and status codes: a small, bounded set.
in_flight = functools.cache(IN_FLIGHT.labels)
latency = functools.cache(LATENCY.labels)
requests = functools.cache(REQUESTS.labels)
rows = functools.cache(ROWS.labels)
stage_latency = functools.cache(STAGE_LATENCY.labels)


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
