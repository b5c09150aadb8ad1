"""Waiting on an event with a time limit, without a task per wait.

``asyncio.wait_for(event.wait(), t)`` wraps the coroutine in a task of its
own (Python 3.11), so every idle poll of a background loop adds a task to the
gateway's loop and takes it away again. ``asyncio.timeout`` cancels the wait
in place instead.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Waits until ``event`` is set or ``timeout_s`` has passed; True if it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
