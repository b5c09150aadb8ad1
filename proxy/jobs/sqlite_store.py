"""The embedded job store: one SQLite file in WAL mode (stdlib ``sqlite3``).

The default store, so ``switchyard serve`` alone supports jobs. Several
gateway processes on one host may share the file: every change runs in a
``BEGIN IMMEDIATE`` transaction (one writer at a time, across processes), and
the file is written with ``synchronous=FULL``, so a submit that returned is on
disk even if the process is killed right after. Leases are a token and an
expiry time in the job's row; a claim takes rows that are QUEUED or whose
lease expired. Calls run on one thread of this store's own, so the event loop
never waits on the disk; each is bounded by ``op_timeout_s`` (then
:class:`StoreUnavailable`).

It does not scale past one host (the file must be local); use the Redis store
for that.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from switchyard.proxy.jobs.records import (
    CANCELLED_CODE,
    ENDED,
    LEASE_LOST_CODE,
    JobOutcome,
    JobRecord,
    JobState,
    Lease,
    QueueFull,
    StoreUnavailable,
    new_lease_token,
)
from switchyard.proxy.jobs.store import JobStore

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    route TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires REAL,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    result_ttl_s REAL NOT NULL,
    expire_time REAL,
    remove_time REAL,
    request BLOB,
    response BLOB,
    error_code INTEGER NOT NULL DEFAULT 0,
    error_message TEXT NOT NULL DEFAULT '',
    completions INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, create_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_expire ON jobs(expire_time) WHERE expire_time IS NOT NULL;
"""

_COLUMNS = (
    "job_id, owner, idempotency_key, route, request_id, state, attempts, max_attempts, create_time, start_time, "
    "end_time, result_ttl_s, expire_time, request, response, error_code, error_message, completions"
)
_LIGHT_COLUMNS = _COLUMNS.replace("request, response", "NULL, NULL")


def _record(row: tuple[Any, ...]) -> JobRecord:
    (
        job_id,
        owner,
        idempotency_key,
        route,
        request_id,
        state,
        attempts,
        max_attempts,
        create_time,
        start_time,
        end_time,
        result_ttl_s,
        expire_time,
        request,
        response,
        error_code,
        error_message,
        completions,
    ) = row
    return JobRecord(
        job_id=job_id,
        owner=owner,
        route=route,
        request_id=request_id,
        state=JobState(state),
        max_attempts=max_attempts,
        create_time=create_time,
        result_ttl_s=result_ttl_s,
        attempts=attempts,
        idempotency_key=idempotency_key or "",
        start_time=start_time,
        end_time=end_time,
        expire_time=expire_time,
        request=request or b"",
        response=response or b"",
        error_code=error_code,
        error_message=error_message,
        completions=completions,
    )


class SqliteJobStore(JobStore):
    """Jobs in the SQLite file ``path`` (created with its folder when missing)."""

    name = "sqlite"

    def __init__(self, path: Path, *, op_timeout_s: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.op_timeout_s = op_timeout_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobs-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # -- plumbing -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.op_timeout_s, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("job store is closed")

        def call() -> T:
            return fn(self._connection())

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await asyncio.shield(loop.run_in_executor(self._executor, call))
        except TimeoutError:
            raise StoreUnavailable(f"job store {self.path} did not answer within {self.op_timeout_s:g} s") from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"job store {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreUnavailable(f"job store {self.path}: {exc.strerror or exc}") from None

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- the interface --------------------------------------------------------

    async def submit(self, job: JobRecord, *, max_queued: int) -> tuple[JobRecord, bool]:
        def body(conn: sqlite3.Connection) -> tuple[JobRecord, bool]:
            if job.idempotency_key:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (job.owner, job.idempotency_key),
                ).fetchone()
                if row is not None:
                    return _record(row), True
            (queued,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED'").fetchone()
            if queued >= max_queued:
                raise QueueFull(queued, max_queued)
            conn.execute(
                "INSERT INTO jobs (job_id, owner, idempotency_key, route, request_id, state, max_attempts, "
                "create_time, result_ttl_s, request) VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.owner,
                    job.idempotency_key or None,
                    job.route,
                    job.request_id,
                    job.max_attempts,
                    job.create_time,
                    job.result_ttl_s,
                    job.request,
                ),
            )
            return job, False

        return await self._run(lambda conn: self._transaction(conn, body))

    async def get(self, job_id: str) -> JobRecord | None:
        def body(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else _record(row)

        return await self._run(body)

    async def by_owner(self, owner: str, limit: int, after: tuple[float, str] | None = None) -> list[JobRecord]:
        def body(conn: sqlite3.Connection) -> list[JobRecord]:
            if after is None:
                rows = conn.execute(
                    f"SELECT {_LIGHT_COLUMNS} FROM jobs WHERE owner = ? ORDER BY create_time DESC, job_id DESC LIMIT ?",
                    (owner, limit),
                ).fetchall()
            else:
                created, job_id = after
                rows = conn.execute(
                    f"SELECT {_LIGHT_COLUMNS} FROM jobs WHERE owner = ? "
                    "AND (create_time < ? OR (create_time = ? AND job_id < ?)) "
                    "ORDER BY create_time DESC, job_id DESC LIMIT ?",
                    (owner, created, created, job_id, limit),
                ).fetchall()
            return [_record(row) for row in rows]

        return await self._run(body)

    async def claim(self, worker: str, limit: int, lease_s: float) -> list[Lease]:
        if limit <= 0:
            return []

        def body(conn: sqlite3.Connection) -> list[Lease]:
            now = self._clock()
            # Leases that ran out on the last attempt: the job fails rather than running again.
            conn.execute(
                "UPDATE jobs SET state = 'FAILED', lease_token = NULL, lease_expires = NULL, end_time = ?, "
                "expire_time = ? + result_ttl_s, error_code = ?, "
                "error_message = 'attempt ' || attempts || ' of ' || max_attempts || ' did not finish: its "
                "worker stopped renewing the lease (the process died or stalled)' "
                "WHERE state = 'RUNNING' AND lease_expires < ? AND attempts >= max_attempts",
                (now, now, LEASE_LOST_CODE, now),
            )
            rows = conn.execute(
                "SELECT job_id, state FROM jobs WHERE state = 'QUEUED' OR (state = 'RUNNING' AND lease_expires < ?) "
                "ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            leases = []
            for job_id, state in rows:
                token = new_lease_token()
                conn.execute(
                    "UPDATE jobs SET state = 'RUNNING', attempts = attempts + 1, lease_token = ?, "
                    "lease_expires = ?, start_time = COALESCE(start_time, ?) WHERE job_id = ?",
                    (token, now + lease_s, now, job_id),
                )
                row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                leases.append(Lease(_record(row), token, redelivered=state == "RUNNING"))
            return leases

        return await self._run(lambda conn: self._transaction(conn, body))

    async def renew(self, job_id: str, token: str, lease_s: float) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET lease_expires = ? WHERE job_id = ? AND lease_token = ? AND state = 'RUNNING'",
                (self._clock() + lease_s, job_id, token),
            )
            return cursor.rowcount == 1

        return await self._run(body)

    async def _complete(self, job_id: str, token: str, outcome: JobOutcome) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, response = ?, error_code = ?, error_message = ?, end_time = ?, "
                "expire_time = ? + result_ttl_s, lease_token = NULL, lease_expires = NULL, "
                "completions = completions + 1 "
                "WHERE job_id = ? AND lease_token = ? AND state = 'RUNNING'",
                (
                    outcome.state.value,
                    outcome.response or None,
                    outcome.error_code,
                    outcome.error_message,
                    now,
                    now,
                    job_id,
                    token,
                ),
            )
            return cursor.rowcount == 1

        return await self._run(body)

    async def requeue(self, job_id: str, token: str, *, error_code: int, error_message: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET state = 'QUEUED', lease_token = NULL, lease_expires = NULL, error_code = ?, "
                "error_message = ? WHERE job_id = ? AND lease_token = ? AND state = 'RUNNING'",
                (error_code, error_message, job_id, token),
            )
            return cursor.rowcount == 1

        return await self._run(body)

    async def cancel(self, job_id: str) -> JobRecord | None:
        def body(conn: sqlite3.Connection) -> JobRecord | None:
            now = self._clock()
            conn.execute(
                "UPDATE jobs SET state = 'CANCELLED', lease_token = NULL, lease_expires = NULL, end_time = ?, "
                "expire_time = ? + result_ttl_s, error_code = ?, error_message = 'cancelled by CancelJob' "
                "WHERE job_id = ? AND state IN ('QUEUED', 'RUNNING')",
                (now, now, CANCELLED_CODE, job_id),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else _record(row)

        return await self._run(lambda conn: self._transaction(conn, body))

    async def sweep(self) -> int:
        ended = ", ".join(f"'{s.value}'" for s in ENDED)

        def body(conn: sqlite3.Connection) -> int:
            now = self._clock()
            removed = conn.execute("DELETE FROM jobs WHERE state = 'EXPIRED' AND remove_time <= ?", (now,)).rowcount
            expired = conn.execute(
                "UPDATE jobs SET state = 'EXPIRED', request = NULL, response = NULL, "
                f"remove_time = ? + result_ttl_s WHERE state IN ({ended}) AND expire_time <= ?",
                (now, now),
            ).rowcount
            return int(removed) + int(expired)

        return await self._run(lambda conn: self._transaction(conn, body))

    async def counts(self) -> dict[JobState, int]:
        def body(conn: sqlite3.Connection) -> dict[JobState, int]:
            found = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            return {state: int(found.get(state.value, 0)) for state in JobState}

        return await self._run(body)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
