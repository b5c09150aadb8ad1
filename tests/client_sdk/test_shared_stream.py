"""Calls on one shared stream (``client_sdk/shared_stream.py``) against a scripted stream call, no server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio
import pytest

from switchyard.client.errors import DeadlineExceeded, Unavailable
from switchyard.client.shared_stream import SharedStream
from switchyard.v1 import gateway_pb2 as pb


class ScriptedStream:
    """A ``StreamStreamCall`` stand-in: records what is written, reads what the test answers."""

    def __init__(self, fail_writes: bool = False) -> None:
        self.written: list[pb.InferRequest] = []
        self.answers: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        self.fail_writes = fail_writes

    async def write(self, message: pb.InferRequest) -> None:
        if self.fail_writes:
            raise asyncio.InvalidStateError("the call is over")
        self.written.append(message)

    async def read(self) -> Any:
        return await self.answers.get()

    def cancel(self) -> None:
        self.cancelled = True
        self.answers.put_nowait(grpc.aio.EOF)

    def answer(self, request_id: str, route: str) -> None:
        self.answers.put_nowait(
            pb.StreamInferResponse(request_id=request_id, response=pb.InferResponse(route=route, request_id=request_id))
        )


def _request(request_id: str) -> pb.InferRequest:
    return pb.InferRequest(route="r", request_id=request_id)


async def _until(predicate: Any) -> None:
    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


async def test_calls_get_their_own_answers_in_any_order() -> None:
    stream = ScriptedStream()
    shared = SharedStream(lambda: stream)
    first = asyncio.ensure_future(shared.infer(_request("a"), 5.0))
    second = asyncio.ensure_future(shared.infer(_request("b"), 5.0))
    await _until(lambda: len(stream.written) == 2)
    assert [m.request_id for m in stream.written] == ["a", "b"]
    assert all(m.timeout_ms == 5000 for m in stream.written)
    stream.answer("b", "second")
    stream.answer("a", "first")
    assert (await first).route == "first" and (await second).route == "second"
    assert shared.pending == 0
    await shared.close()


async def test_a_call_past_its_deadline_raises_then_withdraws_its_request_and_the_late_answer_is_dropped() -> None:
    stream = ScriptedStream()
    shared = SharedStream(lambda: stream)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await shared.infer(_request("slow"), 0.05)
    assert 0.04 <= loop.time() - started < 0.5
    assert shared.pending == 0
    await _until(lambda: len(stream.written) == 2)
    assert stream.written[1] == pb.InferRequest(request_id="slow", cancel=True)
    stream.answer("slow", "late")  # nobody waits for it any more
    stream.answer("next", "next")
    assert (await shared.infer(_request("next"), 5.0)).route == "next"
    await shared.close()


async def test_a_cancelled_call_withdraws_its_request() -> None:
    stream = ScriptedStream()
    shared = SharedStream(lambda: stream)
    call = asyncio.ensure_future(shared.infer(_request("gone"), None))
    await _until(lambda: len(stream.written) == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert shared.pending == 0
    await _until(lambda: len(stream.written) == 2)
    assert stream.written[1] == pb.InferRequest(request_id="gone", cancel=True)
    await shared.close()


async def test_a_stream_whose_writes_fail_fails_its_calls_unavailable_and_the_next_call_opens_another() -> None:
    streams = [ScriptedStream(fail_writes=True), ScriptedStream()]
    opened = iter(streams)
    shared = SharedStream(lambda: next(opened))
    with pytest.raises(Unavailable, match="the shared stream ended") as failure:
        await shared.infer(_request("a"), 5.0)
    assert failure.value.request_id == "a"
    assert streams[0].cancelled
    call = asyncio.ensure_future(shared.infer(_request("b"), 5.0))
    await _until(lambda: len(streams[1].written) == 1)
    streams[1].answer("b", "ok")
    assert (await call).route == "ok"
    await shared.close()
