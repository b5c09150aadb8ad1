"""Health of the gateway and of each route (``grpc.health.v1.Health``).

A background task polls every Triton endpoint of the pool for the readiness
of every model the routes use and publishes:

* ``route/<name>`` — SERVING while some endpoint has all of the route's models ready;
* ``switchyard.v1.Gateway`` and ``""`` (the whole server) — SERVING while
  every route is: the gateway's *readiness* (a load balancer sends it calls);
* ``liveness`` — SERVING from start until shutdown, whatever Triton does: the
  process serves (a liveness probe that fails restarts it, which would not
  bring a dead Triton back).

A backend call that fails with UNAVAILABLE marks the routes of that model
NOT_SERVING at once (``mark_backend_down``) rather than at the next poll.

A reload hands the monitor its new routes (``set_routes``): a route no longer
served goes NOT_SERVING (and leaves ``switchyard_backend_ready``), a new one
is checked at once.

An endpoint whose circuit breaker is open (Triton unreachable) counts as
having no model ready, without any call to it; each change of a circuit's
state triggers a check at once, so routes are SERVING again as soon as an
endpoint's circuit has closed and their models answer ready there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from switchyard.proxy import metrics
from switchyard.proxy.backend.breaker import CircuitState
from switchyard.proxy.backend.pool import TritonPool
from switchyard.proxy.grpc.handlers import GATEWAY_SERVICE
from switchyard.proxy.lifecycle.deadlines import wait_event
from switchyard.proxy.routes.table import RouteTable

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


LIVENESS_SERVICE = "liveness"
"""Health name that is SERVING while the process serves (Kubernetes' liveness probe)."""


def route_service(name: str) -> str:
    """Health service name of a route."""
    return f"route/{name}"


class HealthMonitor:
    def __init__(self, routes: RouteTable, backend: TritonPool, *, interval_s: float) -> None:
        self.servicer = health.aio.HealthServicer()
        self._routes = routes
        self._backend = backend
        self._interval_s = interval_s
        self._ready: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one refresh at a time, and none across a change of routes

    async def start(self) -> None:
        self._backend.add_listener(self._on_circuit)
        await self.servicer.set(LIVENESS_SERVICE, SERVING)
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="health-poll")

    async def stop(self) -> None:
        """Reports NOT_SERVING everywhere (the server is going away) and stops polling."""
        self._backend.remove_listener(self._on_circuit)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.servicer.enter_graceful_shutdown()

    def mark_backend_down(self) -> None:
        """A call saw the backend unavailable: poll now instead of at the next interval."""
        self._wake.set()

    def _on_circuit(self, state: CircuitState) -> None:
        self._wake.set()

    def is_ready(self, route: str) -> bool:
        return self._ready.get(route, False)

    async def set_routes(self, routes: RouteTable) -> None:
        """Reports on ``routes`` from now on (a reload): routes no longer served go NOT_SERVING."""
        async with self._lock:
            removed = sorted({r.name for r in self._routes} - {r.name for r in routes})
            self._routes = routes
            for name in removed:
                self._ready.pop(name, None)
                metrics.BACKEND_READY.labels(name).set(0)  # what several workers' summed gauge keeps
                with contextlib.suppress(KeyError):
                    metrics.BACKEND_READY.remove(name)
                await self.servicer.set(route_service(name), NOT_SERVING)
                log.info("route %s is no longer served: NOT_SERVING", name)
        await self.refresh()

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        # An endpoint whose circuit is open answers False at once, without a call.
        await self._backend.refresh(self._routes.models(), timeout_s=min(1.0, self._interval_s))
        all_ready = True
        for route in self._routes:
            ready = self._backend.serving(route.description.model_names)
            all_ready &= ready
            if self._ready.get(route.name) != ready:
                log.info("route %s is %s", route.name, "SERVING" if ready else "NOT_SERVING")
            self._ready[route.name] = ready
            metrics.BACKEND_READY.labels(route.name).set(1 if ready else 0)
            await self.servicer.set(route_service(route.name), SERVING if ready else NOT_SERVING)
        overall = SERVING if all_ready else NOT_SERVING
        await self.servicer.set(GATEWAY_SERVICE, overall)
        await self.servicer.set("", overall)

    async def _poll(self) -> None:
        while True:
            await wait_event(self._wake, self._interval_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("health poll failed")
