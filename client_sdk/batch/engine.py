"""The scoring engine: chunks of rows through ``InferStream`` with bounded concurrency.

Owns :class:`ChunkScorer`, which keeps at most ``concurrency`` requests (each
one chunk, or part of one) in flight on one ``InferStream``, retries requests
refused with ``UNAVAILABLE`` or ``RESOURCE_EXHAUSTED`` with exponential
backoff, gives each request ``request_timeout_s`` to answer, reopens the
stream when it breaks, and isolates bad rows: a request refused with
``INVALID_ARGUMENT`` is split in halves until the rows at fault stand alone,
so their neighbours are still scored. Every row ends with a prediction or an
error. It reports each chunk when it is sent (``on_sent``) and when every one
of its rows is settled (``on_done``); reading the input, checkpoints and
output files are the caller's (``job``, ``spark``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ..aio import AsyncClient
from ..errors import SwitchyardError
from ..results import InferResult, StreamRequest, new_request_id
from ..retry import RetryPolicy
from .mapping import EncodedChunk, RowError, RowMapping

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Codes that mean the request did not run and may be sent again."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batch is sent: chunk size, concurrency, deadlines, retries, rate."""

    chunk_rows: int = 256
    """Rows per request (and per checkpoint)."""
    concurrency: int = 8
    """Requests in flight at once on the stream."""
    request_timeout_s: float = 30.0
    """Time one request may take; past it its rows fail with DEADLINE_EXCEEDED."""
    max_attempts: int = 5
    """Attempts per request, the first included, for UNAVAILABLE and RESOURCE_EXHAUSTED."""
    backoff: RetryPolicy = field(default_factory=lambda: RetryPolicy(initial_backoff_s=0.1, max_backoff_s=5.0))
    """Waits between attempts (its ``max_attempts`` is not used: see ``max_attempts``)."""
    max_rows_per_s: float | None = None
    """Upper bound on rows sent per second (None: as fast as the gateway answers)."""

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "concurrency", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s!r}")
        if self.max_rows_per_s is not None and not self.max_rows_per_s > 0:
            raise ValueError(f"max_rows_per_s must be > 0 or None, got {self.max_rows_per_s!r}")


@dataclass
class Chunk:
    """Consecutive input rows: the ``index``-th chunk, whose first row is row ``start`` of the input."""

    index: int
    start: int
    table: pa.Table


@dataclass
class EngineStats:
    """Counts of one engine run."""

    requests: int = 0
    retries: int = 0
    splits: int = 0
    stream_restarts: int = 0
    rows_ok: int = 0
    rows_failed: int = 0


class _ChunkState:
    def __init__(self, chunk: Chunk, ids: pa.Array, encoded: EncodedChunk) -> None:
        self.chunk = chunk
        self.ids = ids
        self.errors: dict[int, RowError] = dict(encoded.errors)
        self.answers: list[tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.generic]]]] = []
        self.open_pieces = 0
        self.sent = False


@dataclass
class _Piece:
    state: _ChunkState
    rows: npt.NDArray[np.int64]
    inputs: dict[str, npt.NDArray[np.generic]]
    attempt: int = 1


_Prepared = tuple[_ChunkState, npt.NDArray[np.int64], dict[str, npt.NDArray[np.generic]]]

ChunkDone = Callable[[Chunk, pa.Table, int, int], None]
"""``on_done(chunk, output_table, rows_ok, rows_failed)``."""


class ChunkScorer:
    """Scores chunks of rows through ``mapping.route`` on ``client``'s ``InferStream``.

    ``on_sent(chunk)`` is called before a chunk's first request is sent,
    ``on_done(chunk, table, ok, failed)`` once all its rows are settled, with
    the chunk's output table (rows in input order). Both run on the event loop.
    """

    def __init__(
        self,
        client: AsyncClient,
        mapping: RowMapping,
        options: BatchOptions,
        *,
        on_done: ChunkDone,
        on_sent: Callable[[Chunk], None] | None = None,
    ) -> None:
        self._client = client
        self._mapping = mapping
        self._options = options
        self._on_done = on_done
        self._on_sent = on_sent
        self.stats = EngineStats()
        self._rng = random.Random()
        self._ready: list[tuple[float, int, _Piece]] = []  # heap by time a retry may go
        self._order = itertools.count()
        self._inflight: dict[str, tuple[_Piece, float]] = {}
        self._changed = asyncio.Event()
        self._generation = 0
        self._exhausted = False
        self._open_chunks = 0
        self._rows_sent = 0
        self._started = 0.0
        self._reading: asyncio.Future[_Prepared | None] | None = None

    async def run(self, chunks: Iterator[Chunk]) -> EngineStats:
        """Scores every chunk ``chunks`` yields; returns when each has been reported to ``on_done``."""
        self._started = time.monotonic()
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader")
        watchdog = asyncio.ensure_future(self._watch_deadlines())
        failures_in_a_row = 0
        try:
            while not self._finished():
                self._generation += 1
                answered = False
                try:
                    stream = self._client.infer_stream(self._requests(self._generation, chunks, reader), timeout=None)
                    async for item in stream:
                        answered = True
                        self._on_answer(item)
                except SwitchyardError as error:
                    if error.code not in RETRYABLE and error.code != grpc.StatusCode.CANCELLED:
                        raise
                    failures_in_a_row = 0 if answered else failures_in_a_row + 1
                    if failures_in_a_row >= self._options.max_attempts:
                        raise
                    self.stats.stream_restarts += 1
                    self._generation += 1  # stops this stream's request generator
                    for piece, _ in list(self._inflight.values()):
                        self._retry_or_fail(piece, error, retryable=True)
                    self._inflight.clear()
                    await asyncio.sleep(self._options.backoff.backoff_s(max(failures_in_a_row, 1), self._rng))
        finally:
            watchdog.cancel()
            await asyncio.wait([watchdog])
            reader.shutdown(wait=False, cancel_futures=True)
        return self.stats

    def _finished(self) -> bool:
        return self._exhausted and not self._ready and not self._inflight and self._open_chunks == 0

    async def _requests(
        self, generation: int, chunks: Iterator[Chunk], reader: ThreadPoolExecutor
    ) -> AsyncIterator[StreamRequest]:
        while generation == self._generation:
            piece = await self._next_piece(generation, chunks, reader)
            if piece is None:
                return
            try:
                await self._throttle()
            except BaseException:  # the stream went away while we waited: the piece is sent later
                self._push(piece, 0.0)
                raise
            if generation != self._generation:
                self._push(piece, 0.0)
                return
            if not piece.state.sent:
                piece.state.sent = True
                if self._on_sent is not None:
                    self._on_sent(piece.state.chunk)
            request_id = new_request_id()
            self._inflight[request_id] = (piece, time.monotonic())
            self.stats.requests += 1
            self._rows_sent += len(piece.rows)
            yield StreamRequest(self._mapping.route, piece.inputs, self._mapping.output_names, request_id=request_id)

    async def _next_piece(self, generation: int, chunks: Iterator[Chunk], reader: ThreadPoolExecutor) -> _Piece | None:
        loop = asyncio.get_running_loop()
        while generation == self._generation:
            self._changed.clear()
            wait: float | None = None
            if len(self._inflight) < self._options.concurrency:
                if self._ready:
                    ready_at = self._ready[0][0]
                    if ready_at <= time.monotonic():
                        return heapq.heappop(self._ready)[2]
                    wait = ready_at - time.monotonic()
                elif not self._exhausted:
                    if self._reading is None:
                        self._reading = loop.run_in_executor(reader, self._read_next, chunks)
                    # Shielded: a stream torn down while a chunk is read must not lose that chunk.
                    prepared = await asyncio.shield(self._reading)
                    self._reading = None
                    if prepared is None:
                        self._exhausted = True
                        continue
                    state, rows, inputs = prepared
                    self._open_chunks += 1
                    if len(rows) == 0:
                        self._complete(state)
                        continue
                    # A chunk larger than the route's batch limit goes as several requests.
                    step = self._mapping.max_batch_size or len(rows)
                    pieces = [
                        _Piece(state, rows[i : i + step], {k: v[i : i + step] for k, v in inputs.items()})
                        for i in range(0, len(rows), step)
                    ]
                    state.open_pieces = len(pieces)
                    for piece in pieces[1:]:
                        self._push(piece, 0.0)
                    return pieces[0]
                elif self._finished():
                    return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()
        return None

    def _read_next(self, chunks: Iterator[Chunk]) -> _Prepared | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        encoded = self._mapping.encode(chunk.table)
        ids = self._mapping.row_ids(chunk.table, chunk.start)
        return _ChunkState(chunk, ids, encoded), encoded.rows, encoded.inputs

    async def _throttle(self) -> None:
        rate = self._options.max_rows_per_s
        if rate is None:
            return
        due = self._started + self._rows_sent / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _push(self, piece: _Piece, delay: float) -> None:
        heapq.heappush(self._ready, (time.monotonic() + delay, next(self._order), piece))
        self._changed.set()

    def _on_answer(self, item: InferResult | SwitchyardError) -> None:
        request_id = item.request_id
        entry = self._inflight.pop(request_id or "", None)
        if entry is None:
            return  # answered after its deadline: its rows already failed
        piece = entry[0]
        self._changed.set()
        if isinstance(item, SwitchyardError):
            if item.code == grpc.StatusCode.INVALID_ARGUMENT and len(piece.rows) > 1:
                self.stats.splits += 1
                half = len(piece.rows) // 2
                for part in (slice(0, half), slice(half, None)):
                    rows = piece.rows[part]
                    inputs = {name: array[part] for name, array in piece.inputs.items()}
                    self._push(_Piece(piece.state, rows, inputs), 0.0)
                piece.state.open_pieces += 1
                return
            self._retry_or_fail(piece, item)
            return
        outputs: dict[str, npt.NDArray[np.generic]] = {}
        for name in self._mapping.output_names:
            value = item.outputs.get(name)
            if value is None or value.shape[:1] != (len(piece.rows),):
                got = "no such output" if value is None else f"shape {list(value.shape)}"
                expected = f"expected {len(piece.rows)} rows"
                self._settle(piece, RowError("INTERNAL", f"answer has {got} for output {name!r}, {expected}"))
                return
            outputs[name] = value
        piece.state.answers.append((piece.rows, outputs))
        self._settle(piece, None)

    def _retry_or_fail(self, piece: _Piece, error: SwitchyardError, *, retryable: bool = False) -> None:
        if (retryable or error.code in RETRYABLE) and piece.attempt < self._options.max_attempts:
            self.stats.retries += 1
            delay = self._options.backoff.backoff_s(piece.attempt, self._rng)
            piece.attempt += 1
            self._push(piece, delay)
            return
        self._settle(piece, RowError(error.code.name, error.message))

    def _settle(self, piece: _Piece, error: RowError | None) -> None:
        state = piece.state
        if error is not None:
            for row in piece.rows:
                state.errors[int(row)] = error
        state.open_pieces -= 1
        if state.open_pieces == 0:
            self._complete(state)

    def _complete(self, state: _ChunkState) -> None:
        self._open_chunks -= 1
        self._changed.set()
        answers = state.answers
        if answers:
            rows = np.concatenate([rows for rows, _ in answers])
            order = np.argsort(rows, kind="stable")
            predictions = {
                name: np.concatenate([outputs[name] for _, outputs in answers])[order]
                for name in self._mapping.output_names
            }
            ok_rows = rows[order]
        else:
            predictions, ok_rows = {}, np.zeros(0, dtype=np.int64)
        table = self._mapping.chunk_table(state.ids, predictions, ok_rows, state.errors)
        self.stats.rows_ok += len(ok_rows)
        self.stats.rows_failed += len(state.errors)
        self._on_done(state.chunk, table, len(ok_rows), len(state.errors))

    async def _watch_deadlines(self) -> None:
        timeout = self._options.request_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for request_id, (piece, sent_at) in list(self._inflight.items()):
                if now - sent_at > timeout:
                    # A stream cannot cancel one of its requests: its answer, if it
                    # comes, is ignored, and its rows fail now.
                    del self._inflight[request_id]
                    self._changed.set()
                    self._settle(piece, RowError("DEADLINE_EXCEEDED", f"no answer within {timeout:g} s"))
