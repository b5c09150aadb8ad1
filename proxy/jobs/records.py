"""What the job store holds: :class:`JobRecord`, :class:`Lease`, the states, and the store's errors.

Plain data shared by both stores, the workers and the service; no I/O here.
Times are Unix seconds (``time.time()``): they are compared across processes
and written to durable storage, where a monotonic clock means nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import grpc

from switchyard.proxy.errors import GatewayError


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""States a job reaches by running or being cancelled; its result TTL runs from then."""
TERMINAL = ENDED | {JobState.EXPIRED}
"""States a job never leaves (EXPIRED aside, which only removes it)."""

CANCELLED_CODE = grpc.StatusCode.CANCELLED.value[0]
LEASE_LOST_CODE = grpc.StatusCode.ABORTED.value[0]


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_lease_token() -> str:
    return uuid.uuid4().hex


@dataclass
class JobRecord:
    """One job as stored. ``request`` and ``response`` are serialized InferRequest / InferResponse."""

    job_id: str
    owner: str
    route: str
    request_id: str
    state: JobState
    max_attempts: int
    create_time: float
    result_ttl_s: float
    attempts: int = 0
    idempotency_key: str = ""
    start_time: float | None = None
    end_time: float | None = None
    expire_time: float | None = None
    request: bytes = b""
    response: bytes = b""
    error_code: int = 0
    error_message: str = ""
    completions: int = 0
    """How many times an outcome was written: 1 once the job ended (the compare-and-set keeps it so)."""

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class JobOutcome:
    """How an attempt ended: SUCCEEDED with its response, or FAILED with its status."""

    state: JobState
    response: bytes = b""
    error_code: int = 0
    error_message: str = ""


@dataclass(frozen=True)
class Lease:
    """A job taken by a worker: its record (state RUNNING) and the token that proves the lease is still held."""

    job: JobRecord
    token: str
    redelivered: bool
    """True when the previous attempt's lease ran out (its worker died or stalled) rather than a first run."""


class QueueFull(GatewayError):
    """The store already holds ``jobs_max_queued`` queued jobs; the client should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, queued: int, bound: int) -> None:
        super().__init__(f"job queue is full: {queued} jobs are queued (bound {bound}); submit later")


class StoreUnavailable(GatewayError):
    """The job store cannot be reached or did not answer in time; nothing was changed that the caller relies on."""

    code = grpc.StatusCode.UNAVAILABLE


class JobNotFound(GatewayError):
    """No job has this id in the store: it never existed, or it ended and its result expired."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job_id: no job {job_id!r} (it never existed, or it expired and was removed)")
