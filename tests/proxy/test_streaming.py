"""Pipelined streams: answers in completion order, a bound on requests in flight, everything cancelled on exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from switchyard.proxy.grpc.streaming import pipelined


async def numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


async def test_answers_come_as_they_finish_with_at_most_max_inflight_running() -> None:
    running, peak = 0, 0

    async def answer(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02 if n == 0 else 0.001)
        running -= 1
        return n

    answers = [n async for n in pipelined(numbers(6), answer, max_inflight=3)]
    assert sorted(answers) == list(range(6))
    assert answers[0] != 0  # the slow first request did not hold the others back
    assert peak == 3


async def test_leaving_the_stream_cancels_what_still_runs() -> None:
    cancelled: list[int] = []

    async def answer(n: int) -> int:
        try:
            await asyncio.sleep(0 if n == 0 else 10)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    stream = pipelined(numbers(3), answer, max_inflight=3)
    assert await anext(stream) == 0
    await stream.aclose()  # the client went away
    await asyncio.sleep(0)
    assert sorted(cancelled) == [1, 2]
