"""Admission control: how many inference requests a gateway process takes at once.

Every inference request (an ``Infer`` call, an ``InferProgressive`` call, each
request of an ``InferStream``) takes a slot before anything else is done for
it and gives it back when it is answered. Past the process's bound
(``GatewaySettings.max_inflight``), or its route's own (``max_inflight`` in the
routes file), the request is refused at once with ``RESOURCE_EXHAUSTED``:
under overload the gateway sheds what it cannot serve in time instead of
queueing it until every caller's deadline has passed.

The counts live on the event loop thread; nothing here awaits.
"""

from __future__ import annotations

from typing import Literal

from switchyard.proxy.checks import at_least
from switchyard.proxy.errors import Overloaded

ShedReason = Literal["gateway", "route"]


class Shed(Overloaded):
    """A request refused because a bound was reached; ``reason`` says which one."""

    def __init__(self, message: str, reason: ShedReason) -> None:
        super().__init__(message)
        self.reason: ShedReason = reason


class Admission:
    """Requests in flight, per process and per route, against their bounds. Event loop thread only."""

    def __init__(self, max_inflight: int) -> None:
        at_least("max_inflight", max_inflight, 1)
        self.max_inflight = max_inflight
        self._total = 0
        self._by_route: dict[str, int] = {}

    def inflight(self, route: str | None = None) -> int:
        """Requests holding a slot: all of them, or ``route``'s."""
        return self._total if route is None else self._by_route.get(route, 0)

    def admit(self, route: str, route_limit: int | None = None) -> None:
        """Takes a slot for a request of ``route``, or raises :class:`Shed` naming the bound that is full.

        Every successful ``admit`` must be matched by one ``release``.
        """
        held = self._by_route.get(route, 0)
        if route_limit is not None and held >= route_limit:
            raise Shed(f"route {route!r} has {_requests(held)} in flight", "route")
        if self._total >= self.max_inflight:
            raise Shed(f"gateway has {_requests(self._total)} in flight", "gateway")
        self._total += 1
        self._by_route[route] = held + 1

    def release(self, route: str) -> None:
        """Gives back a slot taken by ``admit(route, ...)``."""
        held = self._by_route.get(route, 0)
        if held <= 0:
            raise RuntimeError(f"release without admit on route {route!r}")
        if held == 1:
            del self._by_route[route]
        else:
            self._by_route[route] = held - 1
        self._total -= 1


def _requests(count: int) -> str:
    return f"{count} request" if count == 1 else f"{count} requests"
