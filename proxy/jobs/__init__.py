"""Asynchronous jobs: a durable queue of inference requests, run by workers inside the gateway processes.

* ``records`` — what a job is (states, the stored record, a worker's lease) and the store's errors;
* ``store`` — the :class:`JobStore` interface and its semantics (leases, compare-and-set completion);
* ``sqlite_store`` — the embedded default (one SQLite file, WAL);
* ``redis_store`` — Redis Streams with a consumer group, shared by every process;
* ``runner`` — the workers (bounded concurrency, heartbeats, retries) and the sweeper;
* ``service`` — the ``switchyard.v1.Jobs`` gRPC service.

:class:`JobQueue` assembles them for one gateway process (``proxy.gateway``).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.grpc.security import KeyStore
from switchyard.proxy.jobs.records import JobRecord, JobState, Lease, QueueFull, StoreUnavailable
from switchyard.proxy.jobs.redis_store import RedisJobStore
from switchyard.proxy.jobs.runner import JobEvents, JobRunner
from switchyard.proxy.jobs.service import JobsService
from switchyard.proxy.jobs.sqlite_store import SqliteJobStore
from switchyard.proxy.jobs.store import JobStore
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.proxy.settings import GatewaySettings

__all__ = [
    "JobEvents",
    "JobQueue",
    "JobRecord",
    "JobRunner",
    "JobState",
    "JobStore",
    "JobsService",
    "Lease",
    "QueueFull",
    "RedisJobStore",
    "SqliteJobStore",
    "StoreUnavailable",
    "open_store",
]

log = logging.getLogger(__name__)


def worker_name() -> str:
    """A name for this process's workers, unique across processes and restarts (host, pid, random)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def open_store(settings: GatewaySettings, *, worker: str) -> JobStore:
    """The job store ``settings`` name (jobs_backend must not be 'off')."""
    if settings.jobs_backend == "redis":
        assert settings.jobs_redis_url is not None  # checked by the settings
        return RedisJobStore(settings.jobs_redis_url, consumer=worker, op_timeout_s=settings.jobs_store_timeout_s)
    path = settings.jobs_db_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"jobs_db {path}: cannot create its folder: {exc.strerror or exc}") from None
    return SqliteJobStore(path, op_timeout_s=settings.jobs_store_timeout_s)


class JobQueue:
    """The job store, this process's workers and the Jobs service, started and stopped together."""

    def __init__(
        self,
        settings: GatewaySettings,
        plane: DataPlane,
        *,
        keys: KeyStore | None = None,
        on_store_health: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.worker = worker_name()
        self.store = open_store(settings, worker=self.worker)
        self.runner = JobRunner(
            self.store, plane.infer, settings, worker_id=self.worker, on_store_health=on_store_health
        )
        self.service = JobsService(self.store, self.runner, plane, settings, keys=keys)

    async def start(self) -> None:
        if isinstance(self.store, SqliteJobStore):
            try:
                await self.store.counts()  # creates the file and schema now: a bad path fails start-up
            except StoreUnavailable as exc:
                raise ConfigError(f"jobs_db: {exc.message}") from None
        log.info("jobs: %s store, worker %s", self.store.name, self.worker)
        await self.runner.start()

    async def stop(self, grace_s: float) -> None:
        await self.runner.stop(grace_s)
        await self.store.close()
