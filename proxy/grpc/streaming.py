"""Pipelined bidirectional streams: each request of a stream answered as soon as it is done, a bounded number at once.

Serves ``switchyard.v1.Gateway/InferStream`` and the OIP front's
``ModelStreamInfer`` alike: the servicer says how one request becomes one
answer; this module owns reading ahead, the bound on requests in flight,
answer order (completion order), withdrawing one request at the client's
word, and cancelling every request still running when the client goes away or
the deadline passes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

RequestT = TypeVar("RequestT")
AnswerT = TypeVar("AnswerT")


async def pipelined(
    requests: AsyncIterator[RequestT],
    answer: Callable[[RequestT], Awaitable[AnswerT]],
    *,
    max_inflight: int,
    key: Callable[[RequestT], str] | None = None,
    withdraws: Callable[[RequestT], bool] | None = None,
) -> AsyncIterator[AnswerT]:
    """Yields ``answer(request)`` for each request as it completes; at most ``max_inflight`` run at once.

    ``answer`` must not raise for a request's own failure (it returns the
    error as an answer); leaving the iteration cancels the reader and every
    answer still running. With ``key`` and ``withdraws``, a request for which
    ``withdraws`` is true is no request: it cancels the running one with the
    same ``key`` (if any), and neither is answered.
    """
    results: asyncio.Queue[AnswerT | None] = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)
    tasks: set[asyncio.Task[None]] = set()
    running: dict[str, asyncio.Task[None]] = {}

    async def one(request: RequestT) -> None:
        try:
            results.put_nowait(await answer(request))  # the queue is unbounded: no wait, no coroutine
        finally:
            slots.release()

    def forget(name: str, task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if running.get(name) is task:
            del running[name]

    async def read() -> None:
        try:
            async for request in requests:
                name = key(request) if key is not None else ""
                if withdraws is not None and withdraws(request):
                    withdrawn = running.pop(name, None)
                    if withdrawn is not None:
                        withdrawn.cancel()
                    continue
                await slots.acquire()
                task = asyncio.create_task(one(request))
                tasks.add(task)
                if name:
                    running[name] = task
                task.add_done_callback(functools.partial(forget, name))
            if tasks:
                # A withdrawn request's task ends cancelled: that is no failure of the stream.
                for outcome in await asyncio.gather(*list(tasks), return_exceptions=True):
                    if isinstance(outcome, Exception):
                        raise outcome
        finally:
            results.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        while (message := await results.get()) is not None:
            yield message
        await reader
    finally:
        # The client went away or the deadline passed: stop the reader and
        # cancel every backend call still running for this stream.
        reader.cancel()
        for task in list(tasks):
            task.cancel()
