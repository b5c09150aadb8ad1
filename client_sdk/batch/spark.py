"""Batch scoring on Spark: a DataFrame in, the same DataFrame's predictions out.

Owns :func:`score_dataframe`. The driver asks the gateway for the route once
(``GetRoute``) and fixes the output schema; each partition is scored on its
executor by the same engine as the embedded run (``engine.ChunkScorer``): one
gRPC channel per partition, chunks of ``chunk_rows`` rows on ``InferStream``,
bounded concurrency, retries, and failed rows kept with their error. Rows
travel as Arrow batches (``mapInArrow``), never as pandas frames or Python
rows. Spark owns retries of whole tasks; checkpoints are not used here (a
retried task scores its partition again). Needs the ``spark`` extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from ..aio import AsyncClient
from ..sync import Client
from ..tls import Tls
from .engine import BatchOptions, Chunk, ChunkScorer
from .mapping import DEFAULT_ID_COLUMN, RowMapping
from .sources import rechunk

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def score_dataframe(
    df: DataFrame,
    *,
    target: str,
    route: str,
    columns: Sequence[str] | None = None,
    inputs: Mapping[str, Sequence[str]] | None = None,
    outputs: Sequence[str] | None = None,
    id_column: str | None = None,
    options: BatchOptions | None = None,
    api_key: str | None = None,
    tls: Tls | None = None,
) -> DataFrame:
    """Predictions of ``route`` for every row of ``df``, computed on the executors.

    The result has the id column (``id_column``, or ``row_id`` from
    ``monotonically_increasing_id()`` when None), one column per prediction
    value and ``error_code``/``error_message`` (null on rows that succeeded),
    as in the embedded run's output. ``target`` must be reachable from the
    executors. Arguments as in :class:`~switchyard.client.batch.BatchJob`;
    ``tls`` travels to the executors as PEM bytes (read on the driver by
    ``Tls.from_files``), so they need no certificate files of their own.
    """
    from pyspark.sql import functions
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    options = options or BatchOptions()
    if id_column is None:
        if columns is None and inputs is None:
            columns = list(df.columns)
        df = df.withColumn(DEFAULT_ID_COLUMN, functions.monotonically_increasing_id())
        id_column = DEFAULT_ID_COLUMN
    with Client(target, api_key=api_key, tls=tls) as client:
        info = client.route(route, timeout=30.0)
    mapping = RowMapping(
        info, to_arrow_schema(df.schema), columns=columns, inputs=inputs, outputs=outputs, id_column=id_column
    )

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tables = (pa.Table.from_batches([b]) for b in batches)
        for table in score_tables(tables, target, mapping, options, api_key, tls):
            yield from table.to_batches()

    return df.mapInArrow(score_partition, from_arrow_schema(mapping.output_schema))


def score_tables(
    tables: Iterator[pa.Table],
    target: str,
    mapping: RowMapping,
    options: BatchOptions,
    api_key: str | None = None,
    tls: Tls | None = None,
) -> list[pa.Table]:
    """Scores ``tables`` (one partition) on a new event loop and channel; the output tables in input order."""
    return asyncio.run(_score_tables(tables, target, mapping, options, api_key, tls))


async def _score_tables(
    tables: Iterator[pa.Table],
    target: str,
    mapping: RowMapping,
    options: BatchOptions,
    api_key: str | None,
    tls: Tls | None,
) -> list[pa.Table]:
    done: dict[int, pa.Table] = {}

    def on_done(chunk: Chunk, table: pa.Table, ok: int, failed: int) -> None:
        done[chunk.index] = table

    def chunks() -> Iterator[Chunk]:
        start = 0
        for index, table in enumerate(rechunk(tables, options.chunk_rows)):
            yield Chunk(index, start, table)
            start += table.num_rows

    async with AsyncClient(target, default_timeout=None, api_key=api_key, tls=tls) as client:
        await ChunkScorer(client, mapping, options, on_done=on_done).run(chunks())
    return [done[index] for index in sorted(done)]
