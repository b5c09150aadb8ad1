"""Where batch rows come from: Parquet, CSV, NumPy files and SQL tables, read as Arrow.

Owns the readers. Each gives its Arrow schema, its row count when known
(for the progress bar), a fingerprint that says whether a checkpoint belongs
to it, and its rows in a stable order as Arrow tables of any size;
:func:`rechunk` cuts those into chunks of exactly ``chunk_rows`` rows, so a
rerun cuts the same chunks. SQL tables are read in the order of the id
column (SQLite: ``rowid`` when there is none); SQLite goes through the
standard library, PostgreSQL (``postgresql://`` URLs) through psycopg 3.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

READ_ROWS = 65_536
FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".npy", ".npz")


class Source(Protocol):
    schema: pa.Schema
    num_rows: int | None

    def fingerprint(self) -> dict[str, Any]: ...

    def tables(self) -> Iterator[pa.Table]: ...

    def close(self) -> None: ...


def rechunk(tables: Iterator[pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter), in order."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        if held < chunk_rows:
            continue
        joined = pa.concat_tables(pending).combine_chunks()
        offset = 0
        while held - offset >= chunk_rows:
            yield joined.slice(offset, chunk_rows)
            offset += chunk_rows
        pending = [joined.slice(offset)]
        held -= offset
    if held:
        yield pa.concat_tables(pending).combine_chunks()


def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class ParquetSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = pq.ParquetFile(path)
        self.schema = self._file.schema_arrow
        self.num_rows: int | None = self._file.metadata.num_rows

    def fingerprint(self) -> dict[str, Any]:
        return _file_fingerprint(self.path)

    def tables(self) -> Iterator[pa.Table]:
        for batch in self._file.iter_batches(batch_size=READ_ROWS):
            yield pa.Table.from_batches([batch])

    def close(self) -> None:
        self._file.close()


class CsvSource:
    """A CSV file with a header line; column types are inferred by Arrow from the first 16 MiB."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._options = pa_csv.ReadOptions(block_size=16 << 20)
        with pa_csv.open_csv(path, read_options=self._options) as reader:
            self.schema = reader.schema
        self.num_rows: int | None = self._count_lines() - 1

    def _count_lines(self) -> int:
        lines, last = 0, b"\n"
        with open(self.path, "rb") as file:
            while block := file.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")

    def fingerprint(self) -> dict[str, Any]:
        return _file_fingerprint(self.path)

    def tables(self) -> Iterator[pa.Table]:
        convert = pa_csv.ConvertOptions(column_types=dict(zip(self.schema.names, self.schema.types, strict=True)))
        with pa_csv.open_csv(self.path, read_options=self._options, convert_options=convert) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])

    def close(self) -> None:
        pass


class NumpySource:
    """A ``.npy`` array, or one array of a ``.npz``, with one row per first-axis entry.

    Each row becomes one list column named after the array (``x`` for a
    ``.npy``); in a ``.npz``, ``id_array`` names a 1-D array of row ids.
    """

    def __init__(self, path: Path, *, array: str | None = None, id_array: str | None = None) -> None:
        self.path = path
        arrays: dict[str, np.ndarray[Any, Any]]
        if path.suffix == ".npy":
            arrays = {array or "x": np.load(path, mmap_mode="r")}
        else:
            with np.load(path) as archive:
                arrays = {name: archive[name] for name in archive.files}
        if array is None:
            candidates = [name for name, value in arrays.items() if value.ndim >= 2]
            if len(candidates) != 1:
                raise ValueError(f"{path} holds arrays {sorted(arrays)}: name the one to score (array=...)")
            array = candidates[0]
        if array not in arrays:
            raise ValueError(f"{path} has no array {array!r}; it holds {sorted(arrays)}")
        self.name = array
        self._values = arrays[array]
        if self._values.ndim < 1:
            raise ValueError(f"array {array!r} of {path} is a scalar: it has no rows")
        self._ids = None
        if id_array is not None:
            if id_array not in arrays:
                raise ValueError(f"{path} has no id array {id_array!r}; it holds {sorted(arrays)}")
            self._ids = arrays[id_array]
            if self._ids.shape != (len(self._values),):
                raise ValueError(f"id array {id_array!r} has shape {self._ids.shape}, expected ({len(self._values)},)")
        self.id_array = id_array
        self.num_rows: int | None = len(self._values)
        self.schema = self._table(0, 0).schema

    def _table(self, start: int, stop: int) -> pa.Table:
        values = np.ascontiguousarray(self._values[start:stop])
        width = int(np.prod(values.shape[1:], dtype=np.int64))
        flat = pa.array(values.reshape(-1))
        columns = {self.name: pa.FixedSizeListArray.from_arrays(flat, width)}
        if self._ids is not None and self.id_array is not None:
            columns = {self.id_array: pa.array(self._ids[start:stop]), **columns}
        return pa.table(columns)

    def fingerprint(self) -> dict[str, Any]:
        return {**_file_fingerprint(self.path), "array": self.name}

    def tables(self) -> Iterator[pa.Table]:
        assert self.num_rows is not None
        for start in range(0, self.num_rows, READ_ROWS):
            yield self._table(start, min(start + READ_ROWS, self.num_rows))

    def close(self) -> None:
        pass


def quote(name: str) -> str:
    """A SQL identifier, quoted (the same in SQLite and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


def _arrow_type(declared: str) -> pa.DataType:
    text = declared.upper()
    if "INT" in text or "SERIAL" in text:
        return pa.int64()
    if any(word in text for word in ("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")):
        return pa.float64()
    if "BOOL" in text:
        return pa.bool_()
    if "BLOB" in text or "BYTEA" in text:
        return pa.binary()
    return pa.string()


def is_postgres(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def connect(database: str) -> Any:
    """A DB-API connection: PostgreSQL for a ``postgresql://`` URL, else a SQLite file."""
    if is_postgres(database):
        import psycopg

        return psycopg.connect(database)
    if not Path(database).is_file():
        raise ValueError(f"no SQLite database at {database}")
    # The reader runs on a thread of its own.
    return sqlite3.connect(database, check_same_thread=False)


class SqlSource:
    """Rows of a table, in the order of ``id_column`` (SQLite: ``rowid`` when None; PostgreSQL needs one)."""

    def __init__(self, database: str, table: str, *, id_column: str | None = None) -> None:
        self.database = database
        self.table = table
        self.postgres = is_postgres(database)
        if self.postgres and id_column is None:
            raise ValueError("reading a PostgreSQL table needs an id column to order its rows (id_column=...)")
        self._conn = connect(database)
        if self.postgres:
            cursor = self._conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            declared = [(str(name), str(kind)) for name, kind in cursor.fetchall()]
        else:
            cursor = self._conn.execute(f"PRAGMA table_info({quote(table)})")
            declared = [(str(row[1]), str(row[2])) for row in cursor.fetchall()]
        if not declared:
            raise ValueError(f"no table {table!r} in {self._where()}")
        self.schema = pa.schema([pa.field(name, _arrow_type(kind)) for name, kind in declared])
        self._order = quote(id_column) if id_column else "rowid"
        self.num_rows: int | None = int(self._conn.execute(f"SELECT COUNT(*) FROM {quote(table)}").fetchone()[0])

    def _where(self) -> str:
        return "the PostgreSQL database" if self.postgres else self.database

    def fingerprint(self) -> dict[str, Any]:
        where = self.database if not self.postgres else self.database.rsplit("@", 1)[-1]  # no password
        return {"database": where, "table": self.table, "rows": self.num_rows, "order": self._order}

    def tables(self) -> Iterator[pa.Table]:
        columns = ", ".join(quote(name) for name in self.schema.names)
        query = f"SELECT {columns} FROM {quote(self.table)} ORDER BY {self._order}"
        cursor = self._conn.cursor(name="switchyard_batch") if self.postgres else self._conn.cursor()
        try:
            cursor.execute(query)
            while rows := cursor.fetchmany(READ_ROWS // 8):
                values = list(zip(*rows, strict=True))
                yield pa.table(
                    [pa.array(column, type=field.type) for column, field in zip(values, self.schema, strict=True)],
                    schema=self.schema,
                )
        finally:
            cursor.close()

    def close(self) -> None:
        self._conn.close()


def open_source(
    path: str | os.PathLike[str],
    *,
    table: str | None = None,
    array: str | None = None,
    id_column: str | None = None,
) -> Source:
    """The reader for ``path``: a file by suffix, or with ``table`` a SQLite file or PostgreSQL URL."""
    text = os.fspath(path)
    if table is not None:
        return SqlSource(text, table, id_column=id_column)
    if is_postgres(text):
        raise ValueError("a database URL needs the table to read (table=...)")
    file = Path(text)
    suffix = file.suffix.lower()
    if not file.is_file():
        raise ValueError(f"no input file at {file}")
    if suffix in (".parquet", ".pq"):
        return ParquetSource(file)
    if suffix == ".csv":
        return CsvSource(file)
    if suffix in (".npy", ".npz"):
        return NumpySource(file, array=array, id_array=id_column if suffix == ".npz" else None)
    if suffix in (".db", ".sqlite", ".sqlite3"):
        raise ValueError(f"{file} is a database: name the table to read (table=...)")
    raise ValueError(f"cannot read {file}: supported inputs are {', '.join(FILE_SUFFIXES)} files and SQL tables")
