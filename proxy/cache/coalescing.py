"""Request coalescing (single flight): identical requests in flight at the same time are computed once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from switchyard.proxy.cache.base import COALESCED

T = TypeVar("T")


@dataclass(eq=False)
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = field(default=0)


async def _await(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


class Coalescer:
    """Single flight: identical requests in flight at the same time are computed once.

    ``await run(key, factory)`` starts ``factory()`` in its own task, or joins
    the task already running under ``key``; every caller gets its result (or
    its exception) and whether it joined. A caller that is cancelled (client
    gone) leaves the others waiting; the task is cancelled only when every
    caller has gone. The entry is removed as soon as the task ends, so a
    request arriving later starts a new flight: results are never reused after
    the fact (that is the cache's job). Event loop thread only.

    Every caller receives the *same* object (and, on failure, the same
    exception instance): a caller that personalises the answer (its own
    ``request_id``) must copy it first, or have the factory return bytes.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """Flights in progress."""
        return len(self._flights)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """Tasks not yet finished, including cancelled flights still unwinding."""
        return frozenset(self._tasks)

    async def run(self, key: str, factory: Callable[[], Awaitable[T]], *, route: str = "") -> tuple[T, bool]:
        """``factory()``'s result for ``key`` and whether this call joined a flight already running.

        ``route`` labels ``switchyard_coalesced_requests_total`` for joined calls.
        """
        flight = self._flights.get(key)
        if flight is not None and flight.task.done():
            flight = None  # ended, its done callback not run yet: never hand out a finished result
        joined = flight is not None
        if flight is None:
            task = asyncio.get_running_loop().create_task(_await(factory), name=f"coalesced:{key}")
            flight = _Flight(task)
            self._flights[key] = flight
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._finished(key, flight, t))
        else:
            COALESCED.labels(route).inc()
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every caller has gone: nobody wants the answer any more.
                self._forget(key, flight)
                flight.task.cancel()

    def _forget(self, key: str, flight: _Flight[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _finished(self, key: str, flight: _Flight[Any], task: asyncio.Task[Any]) -> None:
        self._forget(key, flight)
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a flight every caller left must not log "never retrieved"

    async def close(self) -> None:
        """Cancels every flight and waits for the tasks to end (shutdown)."""
        tasks = list(self._tasks)
        self._flights.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
