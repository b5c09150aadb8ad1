"""The checkpoint of a batch run: a SQLite journal beside the output.

Owns :class:`Journal`. One row per chunk: ``sent`` is written (and committed)
before the chunk's first request leaves, ``done`` with the chunk's output
(Arrow IPC bytes) once all its rows are settled, in one transaction. A run
that is killed and restarted with the same arguments skips every ``done``
chunk, so no finished row is scored again; the rows of chunks still ``sent``
at the kill (at most ``concurrency`` chunks) are the only ones the backend may
see twice. The journal records what the job is (input, route, mapping, chunk
size) and refuses to resume a different one. WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed (a power
cut may lose the last chunks, which are then scored again).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    idx INTEGER PRIMARY KEY,
    start INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sent', 'done')),
    ok INTEGER,
    failed INTEGER,
    result BLOB
);
"""


class JournalMismatch(ValueError):
    """The journal belongs to another job (other input, route, mapping or chunk size)."""


class Journal:
    """The checkpoint at ``path`` for the job described by ``job``; ``restart`` discards an existing one."""

    def __init__(self, path: Path, job: dict[str, Any], *, restart: bool = False) -> None:
        self.path = path
        if restart:
            remove(path)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        described = json.dumps(job, sort_keys=True)
        row = self._conn.execute("SELECT value FROM job WHERE key = 'job'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO job (key, value) VALUES ('job', ?)", (described,))
        elif row[0] != described:
            self._conn.close()
            raise JournalMismatch(
                f"the checkpoint {path} belongs to another job ({row[0]}); "
                f"remove it or restart from scratch (--restart) to score this one ({described})"
            )

    def done_chunks(self) -> set[int]:
        return {int(idx) for (idx,) in self._conn.execute("SELECT idx FROM chunks WHERE state = 'done'")}

    def totals(self) -> tuple[int, int]:
        """Rows (ok, failed) in finished chunks."""
        ok, failed = self._conn.execute(
            "SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(failed), 0) FROM chunks WHERE state = 'done'"
        ).fetchone()
        return int(ok), int(failed)

    def in_flight(self) -> list[tuple[int, int, int]]:
        """``(chunk, first row, rows)`` of chunks sent but not finished."""
        rows = self._conn.execute("SELECT idx, start, rows FROM chunks WHERE state = 'sent' ORDER BY idx")
        return [(int(a), int(b), int(c)) for a, b, c in rows]

    def mark_sent(self, index: int, start: int, rows: int) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO chunks (idx, start, rows, state) VALUES (?, ?, ?, 'sent')", (index, start, rows)
        )

    def commit(self, index: int, start: int, table: pa.Table, ok: int, failed: int) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self._conn.execute(
            "INSERT OR REPLACE INTO chunks (idx, start, rows, state, ok, failed, result) "
            "VALUES (?, ?, ?, 'done', ?, ?, ?)",
            (index, start, table.num_rows, ok, failed, sink.getvalue().to_pybytes()),
        )

    def results(self) -> Iterator[pa.Table]:
        """Each finished chunk's output, in input order."""
        for (blob,) in self._conn.execute("SELECT result FROM chunks WHERE state = 'done' ORDER BY idx"):
            yield pa.ipc.open_stream(blob).read_all()

    def close(self) -> None:
        self._conn.close()


def remove(path: Path) -> None:
    """Deletes a journal and its WAL files."""
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        name.unlink(missing_ok=True)


def read_progress(path: Path) -> dict[str, int]:
    """Chunks and rows done and in flight, read from another process (tests, monitoring)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        done, done_rows, sent, sent_rows = conn.execute(
            "SELECT COALESCE(SUM(state = 'done'), 0), COALESCE(SUM(CASE WHEN state = 'done' THEN rows END), 0), "
            "COALESCE(SUM(state = 'sent'), 0), COALESCE(SUM(CASE WHEN state = 'sent' THEN rows END), 0) FROM chunks"
        ).fetchone()
    finally:
        conn.close()
    return {"done_chunks": done, "done_rows": done_rows, "sent_chunks": sent, "sent_rows": sent_rows}
