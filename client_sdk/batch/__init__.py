"""Batch scoring: a whole data set through a route, resumable, with every row accounted for.

``score(path, route=..., target=...)`` (or :class:`BatchJob`) reads Parquet,
CSV, NumPy files or a SQL table (SQLite, PostgreSQL), sends chunks of rows on
``InferStream`` with bounded concurrency, retries and per-request deadlines,
checkpoints each finished chunk, and writes predictions (or each failed row's
error) next to the input, in input order with the row ids. ``switchyard
batch`` is the same from the command line; ``switchyard.client.batch.spark``
runs it on Spark. Needs the ``batch`` extra (pyarrow, tqdm):
``pip install 'switchyard[batch]'``.

The names below are loaded on first use, so that ``switchyard.client.batch.cli``
(the command's parser) imports without the extra; using one without it
raises ``ModuleNotFoundError`` saying what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import BatchOptions, ChunkScorer
    from .job import BatchJob, BatchSummary, score
    from .journal import JournalMismatch
    from .mapping import ERROR_CODE, ERROR_MESSAGE, RowMapping

_WHERE = {
    "BatchOptions": "engine",
    "ChunkScorer": "engine",
    "BatchJob": "job",
    "BatchSummary": "job",
    "score": "job",
    "JournalMismatch": "journal",
    "ERROR_CODE": "mapping",
    "ERROR_MESSAGE": "mapping",
    "RowMapping": "mapping",
}
EXTRA_PACKAGES = ("pyarrow", "tqdm")

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        loaded = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRA_PACKAGES:
            raise
        raise ModuleNotFoundError(
            f"switchyard.client.batch needs the batch extra: pip install 'switchyard[batch]' ({exc.name} is missing)",
            name=exc.name,
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value
