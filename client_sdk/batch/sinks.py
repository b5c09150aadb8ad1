"""Where scored rows go: Parquet, CSV and NumPy files next to the input, or a SQL table.

Owns the writers and the default output names (``data.parquet`` ->
``data.scored.parquet``, ``data.csv`` -> ``data.scored.csv``, ``.npy``/``.npz``
-> ``data.scored.npz``, table ``t`` -> ``t_scored`` in the same database).
Every writer replaces its target in one step: files are written to a
temporary name and renamed, a table is dropped and re-created in one
transaction; a reader never sees half an output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .mapping import ERROR_CODE, ERROR_MESSAGE, RowMapping
from .sources import connect, is_postgres, quote

FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npz": "npz"}


def default_output(source: str, *, table: str | None = None) -> str:
    """The output next to ``source``: a sibling file, or for a table ``<table>_scored``."""
    if table is not None:
        return f"{table}_scored"
    path = Path(source)
    suffix = ".npz" if path.suffix.lower() in (".npy", ".npz") else path.suffix
    return str(path.with_name(f"{path.stem}.scored{suffix}"))


class FileSink:
    """Writes the output file named ``path``; its format follows the suffix (.parquet, .csv, .npz)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot write {path}: output files end in {', '.join(FILE_FORMATS)}")
        self.format = fmt

    def describe(self) -> str:
        return str(self.path)

    def write(self, tables: Iterable[pa.Table], mapping: RowMapping) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            if self.format == "parquet":
                with pq.ParquetWriter(tmp, mapping.output_schema) as writer:
                    for table in tables:
                        writer.write_table(table)
            elif self.format == "csv":
                with pa_csv.CSVWriter(tmp, mapping.output_schema) as writer:
                    for table in tables:
                        writer.write_table(table)
            else:
                with open(tmp, "wb") as file:
                    np.savez(file, **npz_arrays(list(tables), mapping))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def npz_arrays(tables: list[pa.Table], mapping: RowMapping) -> dict[str, np.ndarray[Any, Any]]:
    """The output as arrays: ids, each output in its shape (zeros on failed rows), ``ok`` and the errors."""
    table = pa.concat_tables(tables) if tables else mapping.output_schema.empty_table()
    ok = table.column(ERROR_CODE).is_null().to_numpy(zero_copy_only=False)
    arrays: dict[str, np.ndarray[Any, Any]] = {mapping.id_name: table.column(mapping.id_name).to_numpy()}
    for output in mapping.outputs:
        columns = [table.column(c).fill_null(0).to_numpy(zero_copy_only=False) for c in output.columns]
        stacked = np.stack(columns, axis=1) if columns else np.zeros((table.num_rows, 0))
        arrays[output.spec.name] = stacked.reshape((table.num_rows, *output.spec.shape[1:]))
    arrays["ok"] = ok
    for name in (ERROR_CODE, ERROR_MESSAGE):
        arrays[name] = np.array(table.column(name).fill_null("").to_pylist(), dtype=str)
    return arrays


def _sql_type(dtype: pa.DataType, postgres: bool) -> str:
    if pa.types.is_boolean(dtype):
        return "BOOLEAN" if postgres else "INTEGER"
    if pa.types.is_integer(dtype):
        return "BIGINT" if postgres else "INTEGER"
    if pa.types.is_floating(dtype):
        return ("REAL" if dtype.bit_width <= 32 else "DOUBLE PRECISION") if postgres else "REAL"
    if pa.types.is_binary(dtype):
        return "BYTEA" if postgres else "BLOB"
    return "TEXT"


class TableSink:
    """Writes the output table ``table`` of ``database`` (a SQLite file or a PostgreSQL URL)."""

    def __init__(self, database: str, table: str) -> None:
        self.database = database
        self.table = table
        self.postgres = is_postgres(database)

    def describe(self) -> str:
        return f"table {self.table}"

    def write(self, tables: Iterable[pa.Table], mapping: RowMapping) -> None:
        schema = mapping.output_schema
        columns = ", ".join(f"{quote(f.name)} {_sql_type(f.type, self.postgres)}" for f in schema)
        mark = "%s" if self.postgres else "?"
        insert = (
            f"INSERT INTO {quote(self.table)} ({', '.join(quote(n) for n in schema.names)}) "
            f"VALUES ({', '.join(mark for _ in schema.names)})"
        )
        conn = connect(self.database) if self.postgres else _sqlite(self.database)
        try:
            cursor = conn.cursor()
            if not self.postgres:
                cursor.execute("BEGIN")
            cursor.execute(f"DROP TABLE IF EXISTS {quote(self.table)}")
            cursor.execute(f"CREATE TABLE {quote(self.table)} ({columns})")
            for table in tables:
                cursor.executemany(insert, _rows(table))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()


def _sqlite(database: str) -> Any:
    import sqlite3

    return sqlite3.connect(database, isolation_level=None)


def _rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    columns = [column.to_pylist() for column in table.columns]
    return zip(*columns, strict=True)
