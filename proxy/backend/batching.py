"""Gateway-side micro-batching: concurrent requests for one model share one Triton call.

On a small model the per-request hop to Triton costs more than the model
itself. A :class:`MicroBatcher` (one per single-model route with
``batching = { max_delay_ms = 2.0, max_batch = 64 }``) holds requests for at
most ``max_delay_ms``, or until ``max_batch`` rows are waiting, then sends
them as one ``ModelInfer`` with every input concatenated along axis 0 and
splits the outputs back by each request's row count.

Requests are merged only when they agree on everything but their rows: the
queue key is (version, each input's name, datatype and inner shape, the
requested outputs). Tensors are row-major little-endian, so concatenating
``raw_data`` is exact for fixed-size datatypes and for BYTES too (each element
carries its own 4-byte length); outputs are split by bytes per row, BYTES
outputs by walking their length prefixes.

Deadlines: the merged call carries the *earliest* remaining deadline of the
members it sends, so no member is ever answered after its own deadline (a
member is never held for a neighbour with a longer deadline). A queue is also
flushed no later than the earliest deadline of its members, and a member
whose deadline has already passed when its queue is flushed is answered
DEADLINE_EXCEEDED and left out rather than shrinking the call to nothing.

Errors of the merged call go to every member. A member whose caller went away
(its task cancelled) is left out if its queue has not been sent yet, or its
share of the answer is dropped; the merged call itself runs in its own task,
so cancelling one member never cancels it for the others.

With ``eager`` (``batching = { ..., eager = true }``) a request that finds
nothing queued and no merged call in flight for its queue is sent at once
(a lone request pays no delay); while a call is in flight, requests queue
and are sent when it returns, at ``max_delay_ms`` or at ``max_batch`` rows,
whichever comes first (Nagle-style: batches form only under load).
``eager_calls = N`` (default 1) lets a request go at once while fewer than N
merged calls of its queue are in flight, and flushes the queue as soon as a
return leaves fewer than N: with a model served by N instances, requests at
moderate load then pay no delay while an instance is free.
``light_rows = R`` (the default route's, not a routes-file option) also sends
a request at once while the rows of its queue in flight and waiting, with it,
are at most R: under that light a load Triton's own queue is at most R rows
deep, so holding a request back would leave an instance idle for the round
trip and could not fill a batch; past it requests merge as above.

Bounds: a queue never holds more than ``max_batch`` rows (it is flushed when
the next request would not fit), and at most ``max_queued_rows`` rows wait in
all queues of one batcher together; past that, or for a request of
``max_batch`` rows or more, the request is sent alone at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

import grpc

from switchyard.proxy import errors
from switchyard.proxy.backend.triton import InferBackend, InferResult
from switchyard.proxy.checks import at_least
from switchyard.proxy.tensor_spec import TensorLike
from switchyard.v1 import gateway_pb2 as pb

_LEN = struct.Struct("<I")

BatchKey = tuple[str, tuple[tuple[str, str, tuple[int, ...]], ...], tuple[str, ...]]


@dataclass
class _Member:
    inputs: dict[str, TensorLike]
    rows: int
    deadline: float
    request_id: str
    future: asyncio.Future[InferResult]


@dataclass
class _Queue:
    members: list[_Member] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    flush_at: float = math.inf


@dataclass(eq=False)
class MicroBatcher:
    """Merges concurrent requests for one model into one backend call per queue (see the module docstring)."""

    backend: InferBackend
    model: str
    _: KW_ONLY
    max_delay_s: float
    """The longest a request waits for others to share its call."""
    max_batch: int
    max_queued_rows: int | None = None
    """Rows waiting in all queues together past which requests are sent alone (None: 8 x ``max_batch``)."""
    eager: bool = False
    """Send at once while fewer than ``eager_calls`` merged calls of the queue are in flight."""
    eager_calls: int = 1
    light_rows: int = 0
    """With ``eager``, send at once while the queue's rows in flight and waiting (the new one too) are at most this."""

    def __post_init__(self) -> None:
        at_least("max_batch", self.max_batch, 1)
        at_least("max_delay_s", self.max_delay_s, 0)
        at_least("eager_calls", self.eager_calls, 1)
        self._row_bound = 8 * self.max_batch if self.max_queued_rows is None else self.max_queued_rows
        self._queues: dict[BatchKey, _Queue] = {}
        self._queued_rows = 0
        self._sending: set[asyncio.Task[None]] = set()
        self._inflight: dict[BatchKey, int] = {}
        self._inflight_rows: dict[BatchKey, int] = {}

    @property
    def queued_rows(self) -> int:
        """Rows waiting in all queues (not yet sent)."""
        return self._queued_rows

    async def infer(
        self,
        version: str,
        inputs: Sequence[TensorLike],
        outputs: Sequence[str],
        *,
        deadline: float,
        request_id: str = "",
    ) -> InferResult:
        """One request's answer; ``deadline`` is a ``time.monotonic()`` value."""
        rows = _rows_of(inputs)
        if (
            rows is None
            or rows >= self.max_batch
            or self._queued_rows + rows > self._row_bound
            or self.max_delay_s == 0
        ):
            return await self.backend.infer(
                self.model, version, inputs, outputs, timeout_s=deadline - time.monotonic(), request_id=request_id
            )
        key: BatchKey = (
            version,
            tuple(sorted((t.name, t.datatype, tuple(t.shape[1:])) for t in inputs)),
            tuple(outputs),
        )
        loop = asyncio.get_running_loop()
        member = _Member({t.name: t for t in inputs}, rows, deadline, request_id, loop.create_future())
        queue = self._queues.get(key)
        if queue is not None and queue.rows + rows > self.max_batch:
            self._flush(key)
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue()
        queue.members.append(member)
        queue.rows += rows
        self._queued_rows += rows
        if queue.rows >= self.max_batch or (self.eager and self._goes_now(key, queue)):
            self._flush(key)
        else:
            # The first member starts the delay; any member may bring the flush forward to its deadline.
            first = len(queue.members) == 1
            flush_at = min(time.monotonic() + self.max_delay_s if first else queue.flush_at, deadline)
            if flush_at < queue.flush_at:
                if queue.timer is not None:
                    queue.timer.cancel()
                queue.flush_at = flush_at
                queue.timer = loop.call_later(max(0.0, flush_at - time.monotonic()), self._flush, key)
        # Cancelling this await cancels only this member's future.
        return await member.future

    def _goes_now(self, key: BatchKey, queue: _Queue) -> bool:
        """With ``eager``: whether ``queue`` is sent now rather than left to fill (see the module docstring)."""
        return (
            self._inflight.get(key, 0) < self.eager_calls
            or self._inflight_rows.get(key, 0) + queue.rows <= self.light_rows
        )

    def _flush(self, key: BatchKey) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        self._queued_rows -= queue.rows
        now = time.monotonic()
        live: list[_Member] = []
        for member in queue.members:
            if member.future.done():  # the caller went away
                continue
            if member.deadline <= now:
                member.future.set_exception(
                    errors.DeadlineExceeded(f"deadline exceeded before calling model {self.model!r}")
                )
                continue
            live.append(member)
        if not live:
            return
        rows = sum(m.rows for m in live)
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self._inflight_rows[key] = self._inflight_rows.get(key, 0) + rows
        task = asyncio.get_running_loop().create_task(self._send(key, live), name=f"microbatch {self.model}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda _: self._sent(key, rows))

    def _sent(self, key: BatchKey, rows: int) -> None:
        left = self._inflight.pop(key, 1) - 1
        left_rows = self._inflight_rows.pop(key, rows) - rows
        if left > 0:
            self._inflight[key] = left
            self._inflight_rows[key] = left_rows
        queue = self._queues.get(key)
        if self.eager and queue is not None and self._goes_now(key, queue):
            self._flush(key)  # a call the queue was waiting behind has returned

    async def _send(self, key: BatchKey, members: list[_Member]) -> None:
        version, specs, outputs = key
        try:
            if len(members) == 1:
                only = members[0]
                inputs = [only.inputs[name] for name, _, _ in specs]
            else:
                inputs = [
                    pb.Tensor(
                        name=name,
                        datatype=datatype,
                        shape=[sum(m.rows for m in members), *inner],
                        raw_data=b"".join(m.inputs[name].raw_data for m in members),
                    )
                    for name, datatype, inner in specs
                ]
            timeout_s = min(m.deadline for m in members) - time.monotonic()
            result = await self.backend.infer(
                self.model, version, inputs, outputs, timeout_s=timeout_s, request_id=members[0].request_id
            )
            parts = [result] if len(members) == 1 else _split(result, [m.rows for m in members], self.model)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else errors.BackendUnavailable("gateway shutting down")
            for member in members:
                if not member.future.done():
                    member.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for member, part in zip(members, parts, strict=True):
            if not member.future.done():
                member.future.set_result(part)

    async def close(self) -> None:
        """Sends what is queued and waits for calls in flight."""
        for key in list(self._queues):
            self._flush(key)
        for task in list(self._sending):
            with contextlib.suppress(BaseException):
                await task


def _rows_of(inputs: Sequence[TensorLike]) -> int | None:
    """The common batch size of ``inputs``; None when they cannot be batched (no inputs, scalars, disagreeing)."""
    if not inputs:
        return None
    rows = {t.shape[0] if len(t.shape) > 0 else -1 for t in inputs}
    if len(rows) != 1:
        return None
    (n,) = rows
    return n if n > 0 else None


def _split(result: InferResult, rows: Sequence[int], model: str) -> list[InferResult]:
    """Splits a merged answer back into one answer per member, by row counts."""
    total = sum(rows)
    per_member: list[list[pb.Tensor]] = [[] for _ in rows]
    for tensor in result.outputs:
        if len(tensor.shape) == 0 or tensor.shape[0] != total:
            raise errors.BackendError(
                grpc.StatusCode.INTERNAL,
                f"model {model!r}: output {tensor.name!r} has shape {list(tensor.shape)}, "
                f"expected {total} rows for a merged batch",
            )
        inner = list(tensor.shape[1:])
        for i, chunk in enumerate(_split_raw(tensor, rows, total, model)):
            per_member[i].append(
                pb.Tensor(name=tensor.name, datatype=tensor.datatype, shape=[rows[i], *inner], raw_data=chunk)
            )
    return [InferResult(model=result.model, version=result.version, outputs=outs) for outs in per_member]


def _split_raw(tensor: pb.Tensor, rows: Sequence[int], total: int, model: str) -> list[bytes]:
    raw = tensor.raw_data
    chunks: list[bytes] = []
    if tensor.datatype != "BYTES":
        if len(raw) % total:
            raise errors.BackendError(
                grpc.StatusCode.INTERNAL,
                f"model {model!r}: output {tensor.name!r} holds {len(raw)} bytes, not a multiple of {total} rows",
            )
        row_bytes = len(raw) // total
        start = 0
        for n in rows:
            chunks.append(raw[start : start + n * row_bytes])
            start += n * row_bytes
        return chunks
    per_row = math.prod(tensor.shape[1:])
    view = memoryview(raw)
    offset = 0
    for n in rows:
        start = offset
        for _ in range(n * per_row):
            if offset + 4 > len(raw):
                raise errors.BackendError(
                    grpc.StatusCode.INTERNAL, f"model {model!r}: output {tensor.name!r} is truncated"
                )
            (length,) = _LEN.unpack_from(view, offset)
            offset += 4 + length
        if offset > len(raw):
            raise errors.BackendError(grpc.StatusCode.INTERNAL, f"model {model!r}: output {tensor.name!r} is truncated")
        chunks.append(raw[start:offset])
    return chunks
