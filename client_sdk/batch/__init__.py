"""Batch scoring: a whole data set through a route, resumable, with every row accounted for.

``score(path, route=..., target=...)`` (or :class:`BatchJob`) reads Parquet,
CSV, NumPy files or a SQL table (SQLite, PostgreSQL), sends chunks of rows on
``InferStream`` with bounded concurrency, retries and per-request deadlines,
checkpoints each finished chunk, and writes predictions (or each failed row's
error) next to the input, in input order with the row ids. ``switchyard
batch`` is the same from the command line; ``switchyard.client.batch.spark``
runs it on Spark. Needs the ``batch`` extra (pyarrow, tqdm).
"""

from __future__ import annotations

from .engine import BatchOptions, ChunkScorer
from .job import BatchJob, BatchSummary, score
from .journal import JournalMismatch
from .mapping import ERROR_CODE, ERROR_MESSAGE, RowMapping

__all__ = [
    "ERROR_CODE",
    "ERROR_MESSAGE",
    "BatchJob",
    "BatchOptions",
    "BatchSummary",
    "ChunkScorer",
    "JournalMismatch",
    "RowMapping",
    "score",
]
