"""Prometheus metrics of the gateway.

Requests by route and status code, end-to-end latency per route, latency per
stage (pre, infer, post), calls in flight and calls shed by a ``max_inflight``
bound. The endpoint is served by
``start_metrics_server`` on its own port, bound to loopback unless configured
otherwise.
"""

from __future__ import annotations

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
IN_FLIGHT = Gauge("switchyard_inflight_requests", "Requests being processed now, by route.", ["route"])
SHED = Counter(
    "switchyard_shed_requests",
    "Requests refused with RESOURCE_EXHAUSTED because a max_inflight bound was reached, "
    "by route and bound (reason: gateway or route).",
    ["route", "reason"],
)
BACKEND_READY = Gauge("switchyard_backend_ready", "1 when every model of the route is ready in Triton.", ["route"])


def start_metrics_server(host: str, port: int) -> int:
    """Serves /metrics on ``host:port`` (0 picks a port) and returns the port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return int(server.server_address[1])
