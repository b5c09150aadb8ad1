"""One embedded batch run: input -> route -> output, checkpointed, with progress and a summary.

Owns :class:`BatchJob` (and :func:`score`, its one-call form): it opens the
input, asks the gateway for the route's inputs and outputs (``GetRoute``),
maps columns to tensors (``mapping``), runs the ``engine`` over the chunks
the checkpoint (``journal``) does not hold yet, shows a progress bar with rate
and ETA, and when every chunk is done writes the output in input order
(``sinks``), then removes the checkpoint. Run again after a crash with the
same arguments, it resumes where the checkpoint ends.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..aio import AsyncClient
from ..tls import Tls
from .engine import BatchOptions, Chunk, ChunkScorer
from .journal import Journal, remove
from .mapping import RowMapping
from .sinks import FileSink, TableSink, default_output
from .sources import Source, is_postgres, open_source, rechunk


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    rows: int
    """Rows in the output (all rows of the input)."""
    rows_ok: int
    rows_failed: int
    """Rows written with an error instead of predictions."""
    rows_scored: int
    """Rows settled by this run (the rest came from the checkpoint)."""
    rows_resumed: int
    """Rows taken from the checkpoint of an interrupted run."""
    elapsed_s: float
    requests: int
    retries: int
    output: str

    @property
    def rows_per_s(self) -> float:
        """Rows settled per second by this run."""
        return self.rows_scored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        text = (
            f"{self.rows} rows ({self.rows_ok} ok, {self.rows_failed} failed) -> {self.output}; "
            f"scored {self.rows_scored} rows in {self.elapsed_s:.2f} s ({self.rows_per_s:.0f} rows/s, "
            f"{self.requests} requests, {self.retries} retries)"
        )
        if self.rows_resumed:
            text += f"; {self.rows_resumed} rows resumed from the checkpoint"
        return text


class BatchJob:
    """Scores ``source`` through ``route`` on the gateway at ``target``.

    ``source`` is a Parquet, CSV, ``.npy`` or ``.npz`` file, or with ``table``
    a SQLite file or a ``postgresql://`` URL. ``output`` is the output file
    (format by suffix) or, for a table, the output table; default: beside the
    input (``data.scored.parquet``, table ``<table>_scored``). ``columns`` or
    ``inputs`` choose the feature columns (see ``RowMapping``); ``id_column``
    is kept as the row id (default: the row's position, as ``row_id``);
    ``array`` names the array of a ``.npz``. ``journal`` is the checkpoint
    file (default: ``<output>.journal``); ``restart`` discards it. ``tls``
    (:class:`~switchyard.client.Tls`) makes the channel TLS or mutual TLS,
    ``api_key`` is sent with every call, as with the SDK's clients.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        route: str,
        target: str,
        table: str | None = None,
        output: str | os.PathLike[str] | None = None,
        columns: Sequence[str] | None = None,
        inputs: Mapping[str, Sequence[str]] | None = None,
        outputs: Sequence[str] | None = None,
        id_column: str | None = None,
        array: str | None = None,
        options: BatchOptions | None = None,
        journal: str | os.PathLike[str] | None = None,
        restart: bool = False,
        progress: bool = True,
        api_key: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self.route = route
        self.target = target
        self.table = table
        self.output = os.fspath(output) if output is not None else default_output(self.source, table=table)
        self.columns = columns
        self.inputs = inputs
        self.outputs = outputs
        self.id_column = id_column
        self.array = array
        self.options = options or BatchOptions()
        if journal is not None:
            self.journal_path = Path(journal)
        elif table is None:
            self.journal_path = Path(self.output + ".journal")
        elif is_postgres(self.source):
            self.journal_path = Path(f"{self.output}.journal")
        else:
            self.journal_path = Path(f"{self.source}.{self.output}.journal")
        self.restart = restart
        self.progress = progress
        self.api_key = api_key
        self.tls = tls

    def run(self) -> BatchSummary:
        """Runs the job to the end on a new event loop (uvloop when installed)."""
        try:
            import uvloop
        except ImportError:  # the SDK alone: uvloop comes with the server extra
            return asyncio.run(self.run_async())
        return uvloop.run(self.run_async())

    async def run_async(self) -> BatchSummary:
        """Runs the job to the end on the running event loop."""
        source = open_source(self.source, table=self.table, array=self.array, id_column=self.id_column)
        try:
            sink = TableSink(self.source, self.output) if self.table is not None else FileSink(Path(self.output))
            async with AsyncClient(self.target, default_timeout=None, api_key=self.api_key, tls=self.tls) as client:
                info = await client.route(self.route, timeout=30.0)
                mapping = RowMapping(
                    info,
                    source.schema,
                    columns=self.columns,
                    inputs=self.inputs,
                    outputs=self.outputs,
                    id_column=self.id_column,
                )
                job = {
                    "input": source.fingerprint(),
                    "mapping": mapping.describe(),
                    "chunk_rows": self.options.chunk_rows,
                }
                journal = Journal(self.journal_path, job, restart=self.restart)
                try:
                    summary = await self._score(client, source, mapping, journal, sink)
                finally:
                    journal.close()
        finally:
            source.close()
        remove(self.journal_path)
        return summary

    async def _score(
        self,
        client: AsyncClient,
        source: Source,
        mapping: RowMapping,
        journal: Journal,
        sink: FileSink | TableSink,
    ) -> BatchSummary:
        done = journal.done_chunks()
        resumed_ok, resumed_failed = journal.totals()
        resumed = resumed_ok + resumed_failed
        bar = _progress_bar(source.num_rows, resumed, enabled=self.progress)

        def on_sent(chunk: Chunk) -> None:
            journal.mark_sent(chunk.index, chunk.start, chunk.table.num_rows)

        def on_done(chunk: Chunk, table: pa.Table, ok: int, failed: int) -> None:
            journal.commit(chunk.index, chunk.start, table, ok, failed)
            if bar is not None:
                bar.update(table.num_rows)

        scorer = ChunkScorer(client, mapping, self.options, on_done=on_done, on_sent=on_sent)
        scoring_started = time.monotonic()
        try:
            stats = await scorer.run(_chunks(source, self.options.chunk_rows, skip=done))
        finally:
            if bar is not None:
                bar.close()
        scoring_s = time.monotonic() - scoring_started
        sink.write(journal.results(), mapping)
        ok, failed = journal.totals()
        return BatchSummary(
            rows=ok + failed,
            rows_ok=ok,
            rows_failed=failed,
            rows_scored=stats.rows_ok + stats.rows_failed,
            rows_resumed=resumed,
            elapsed_s=scoring_s,  # scoring only; reading the checkpoint and writing the output excluded
            requests=stats.requests,
            retries=stats.retries,
            output=sink.describe(),
        )


def _chunks(source: Source, chunk_rows: int, *, skip: set[int]) -> Iterator[Chunk]:
    start = 0
    for index, table in enumerate(rechunk(source.tables(), chunk_rows)):
        if index not in skip:
            yield Chunk(index, start, table)
        start += table.num_rows


def _progress_bar(total: int | None, initial: int, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="rows", unit_scale=True, file=sys.stderr, mininterval=0.5, smoothing=0.1
    )


def score(source: str | os.PathLike[str], *, route: str, target: str, **kwargs: Any) -> BatchSummary:
    """Scores ``source`` through ``route`` (see :class:`BatchJob` for the arguments) and returns the summary."""
    return BatchJob(source, route=route, target=target, **kwargs).run()
