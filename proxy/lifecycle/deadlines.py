"""How long things may wait: a call's deadline, and waiting on an event with a time limit.

A call's timeout is the client's remaining time, else the default, capped by
its route's ``timeout_s`` (:func:`call_timeout`); :data:`DEADLINE_SLACK_S` is
how long past it a request's work may run before the lifecycle gives up on it.

:func:`wait_event` waits without a task per wait:
``asyncio.wait_for(event.wait(), t)`` wraps the coroutine in a task of its
own (Python 3.11), so every idle poll of a background loop adds a task to the
gateway's loop and takes it away again. ``asyncio.timeout`` cancels the wait
in place instead.
"""

from __future__ import annotations

import asyncio

DEADLINE_SLACK_S = 0.1
"""How long past its deadline a request's work may run before the lifecycle gives up on it.

The backend call's own gRPC timeout ends at the deadline and reports which
model was late; this bound only catches what has no timeout of its own.
"""


def call_timeout(client_remaining: float | None, default_s: float, route_timeout_s: float | None) -> float:
    """Seconds a call may take: the client's time left (else ``default_s``), capped by its route's timeout."""
    timeout = client_remaining if client_remaining is not None else default_s
    if route_timeout_s is not None:
        timeout = min(timeout, route_timeout_s)
    return timeout


def own_timeout(client_remaining: float | None, timeout_ms: int) -> float | None:
    """The caller's time left, capped by a request's own ``timeout_ms`` (0: none)."""
    if not timeout_ms:
        return client_remaining
    own = timeout_ms / 1e3
    return own if client_remaining is None else min(client_remaining, own)


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Waits until ``event`` is set or ``timeout_s`` has passed; True if it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
