"""Concurrent ``infer`` calls carried on one shared ``InferStream``.

A unary call costs a new HTTP/2 stream and its headers, on the client and on
the gateway; a message on an open stream costs one frame. :class:`SharedStream`
keeps an ``InferStream`` open and multiplexes calls on it (a client opens
a few, :class:`SharedStreams`, as its calls in flight grow, since one
stream's messages are sent and read one after another): each
call writes its request, then waits for the answer that carries its
``request_id`` (answers come in completion order), so calls behave as unary
ones do:

- **Deadlines.** The call's timeout travels in the request's ``timeout_ms``,
  which the gateway applies to that request alone (the stream has no
  deadline). The caller also stops waiting at the deadline, so a late answer
  never holds it up; it raises ``DeadlineExceeded`` then.
- **Cancellation.** A call that is cancelled or runs past its deadline sends
  a ``cancel`` message for its ``request_id``: the gateway withdraws the
  request if it is still running and answers neither. An answer that arrives
  anyway finds no waiter and is dropped.
- **Failures.** A request's own error comes back as its status. If the
  stream itself fails (gateway restarted, connection lost), every call
  waiting on it gets that status (``UNAVAILABLE`` for a lost connection, so
  idempotent calls are retried as unary ones are) and the next call opens a
  new stream.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from switchyard.v1 import gateway_pb2 as pb

from .errors import Cancelled, DeadlineExceeded, SwitchyardError, Unavailable, error_from

CALLS_PER_STREAM = 4
"""Calls waiting on every open shared stream before another one is opened."""

OpenStream = Callable[[], Any]
"""Opens a new ``InferStream`` call (a ``grpc.aio.StreamStreamCall``)."""


class SharedStream:
    """One ``InferStream`` carrying concurrent calls (see the module docstring); bound to one event loop.

    A call puts its request in the stream's outbox and waits for its answer;
    one writer task per stream writes the outbox in order, so callers take no
    lock and never wait for a write. The caller's deadline is a timer that
    ends its wait (no ``asyncio.timeout`` scope per call).
    """

    def __init__(self, open_stream: OpenStream) -> None:
        self._open_stream = open_stream
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[pb.StreamInferResponse]] = {}
        self._outbox: deque[pb.InferRequest] = deque()
        """Messages for the open stream not yet written (requests, and withdrawals of requests written before)."""
        self._wake: asyncio.Future[None] | None = None
        """Set while the writer waits for messages: completing it wakes the writer."""

    @property
    def pending(self) -> int:
        """Calls waiting for their answer."""
        return len(self._pending)

    def carries(self, request_id: str) -> bool:
        """Whether a call with this ``request_id`` is waiting: a second one must go unary."""
        return request_id in self._pending

    async def infer(self, request: pb.InferRequest, timeout: float | None) -> pb.InferResponse:
        """Sends ``request`` on the stream and returns its answer; raises its ``SwitchyardError``.

        ``request.request_id`` must be set and not be in use by a waiting call.
        """
        request_id = request.request_id
        if timeout is not None:
            request.timeout_ms = max(1, math.ceil(timeout * 1e3))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[pb.StreamInferResponse] = loop.create_future()
        self._pending[request_id] = answer
        timer = None if timeout is None else loop.call_later(timeout, _expire, answer)
        call = None
        try:
            call = self._stream()
            self._send(request)
            message = await answer
        except _Expired:
            raise DeadlineExceeded("deadline exceeded waiting on the shared stream", request_id=request_id) from None
        finally:
            if timer is not None:
                timer.cancel()
            if self._pending.get(request_id) is answer:
                del self._pending[request_id]
                # No answer came (cancelled, or past the deadline): withdraw the request, written after it.
                if call is not None and call is self._call:
                    self._send(pb.InferRequest(request_id=request_id, cancel=True))
        which = message.WhichOneof("result")
        if which == "response":
            return message.response
        if which == "error":
            raise error_from(message.error, request_id=request_id)
        raise Unavailable("stream message carries neither a response nor an error", request_id=request_id)

    async def close(self) -> None:
        """Ends the stream; waiting calls get ``CANCELLED``. The next call would open a new one."""
        call, reader, writer = self._call, self._reader, self._writer
        self._call = self._reader = self._writer = None
        self._outbox.clear()
        if call is not None:
            call.cancel()
        if writer is not None:
            writer.cancel()
        if reader is not None:
            reader.cancel()
        await asyncio.gather(*(task for task in (reader, writer) if task is not None), return_exceptions=True)

    def _stream(self) -> Any:
        if self._call is None:
            call = self._call = self._open_stream()
            self._outbox.clear()
            self._reader = asyncio.create_task(self._read(call), name="switchyard-shared-stream")
            self._writer = asyncio.create_task(self._write(call), name="switchyard-shared-stream-writer")
        return self._call

    def _send(self, message: pb.InferRequest) -> None:
        """Queues ``message`` for the open stream's writer."""
        self._outbox.append(message)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _write(self, call: Any) -> None:
        """Writes the outbox to ``call`` in order until the stream ends."""
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        try:
            while call is self._call:
                if not outbox:
                    self._wake = wake = loop.create_future()
                    try:
                        await wake
                    finally:
                        if self._wake is wake:  # not a newer stream's writer's
                            self._wake = None
                    continue
                await call.write(outbox.popleft())
        except Exception as error:  # AioRpcError, InvalidStateError, UsageError: the stream is over
            # Every call waiting on it learns why (the reader may tell them first).
            self._fail_all(call, _stream_failure(error, ""))

    async def _read(self, call: Any) -> None:
        failure: SwitchyardError
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    failure = Unavailable("the gateway ended the shared stream")
                    break
                waiter = self._pending.pop(message.request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                # else: a withdrawn or timed-out call's late answer, dropped
        except grpc.aio.AioRpcError as error:
            failure = error_from(error)
        except asyncio.CancelledError:
            failure = Cancelled("the client closed the shared stream")
            self._fail_all(call, failure)
            raise
        self._fail_all(call, failure)

    def _fail_all(self, call: Any, failure: SwitchyardError) -> None:
        """Ends every call waiting on ``call`` with ``failure``; the next call opens a new stream."""
        if call is not self._call and call is not None and self._call is not None:
            return  # a stream that ended before: its calls were failed then
        self._stream_ended(call)
        waiting, self._pending = self._pending, {}
        for request_id, waiter in waiting.items():
            if not waiter.done():
                waiter.set_exception(_with_request_id(failure, request_id))

    def _stream_ended(self, call: Any) -> None:
        if call is not None and call is self._call:
            self._call = None
            self._reader = self._writer = None
            self._outbox.clear()
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)  # the writer sees the stream is over and ends
            call.cancel()


class _Expired(Exception):
    """A shared-stream call's deadline passed while it waited (raised into its wait by its timer)."""


def _expire(answer: asyncio.Future[pb.StreamInferResponse]) -> None:
    if not answer.done():
        answer.set_exception(_Expired())


class SharedStreams:
    """Shared streams of one channel, opened as calls need them, each call on the one with the fewest waiting.

    A stream's messages are written and read one after another, so one
    stream carrying many calls becomes a queue: a new stream is opened when
    every open one has ``calls_per_stream`` calls waiting, up to ``most``.
    """

    def __init__(self, open_stream: OpenStream, most: int, calls_per_stream: int = CALLS_PER_STREAM) -> None:
        self._open_stream = open_stream
        self.most = most
        self.calls_per_stream = calls_per_stream
        self.streams: list[SharedStream] = []

    @property
    def pending(self) -> int:
        """Calls waiting for their answer, on every stream."""
        return sum(stream.pending for stream in self.streams)

    def carries(self, request_id: str) -> bool:
        return any(stream.carries(request_id) for stream in self.streams)

    def least_busy(self) -> SharedStream:
        """The stream for the next call."""
        best = min(self.streams, key=lambda stream: stream.pending, default=None)
        if best is None or (best.pending >= self.calls_per_stream and len(self.streams) < self.most):
            best = SharedStream(self._open_stream)
            self.streams.append(best)
        return best

    async def close(self) -> None:
        streams, self.streams = self.streams, []
        for stream in streams:
            await stream.close()


def _with_request_id(failure: SwitchyardError, request_id: str) -> SwitchyardError:
    return type(failure)(failure.message, request_id=request_id)


def _stream_failure(error: BaseException, request_id: str) -> SwitchyardError:
    if isinstance(error, grpc.aio.AioRpcError):
        return error_from(error, request_id=request_id)
    return Unavailable(f"the shared stream ended: {error}", request_id=request_id)
