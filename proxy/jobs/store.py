"""The job store interface: one durable queue of jobs, two implementations.

:class:`JobStore` is what the workers and the Jobs service use;
``sqlite_store.SqliteJobStore`` (embedded, the default) and
``redis_store.RedisJobStore`` (shared by every gateway process on one Redis)
implement it with the same semantics:

* ``submit`` writes the job durably before it returns (a job it returned is
  never lost), refusing with :class:`QueueFull` past ``max_queued`` queued jobs,
  and answering with the earlier job when the owner reuses an idempotency key.
* ``claim`` hands a worker QUEUED jobs, and RUNNING jobs whose lease ran out
  (their worker died), as RUNNING with a fresh lease token and ``attempts`` + 1;
  a job whose lease ran out on its last attempt is FAILED instead.
* ``renew`` extends a lease while its token is current (the heartbeat); False
  means the lease is lost (the job was cancelled, or taken over).
* ``complete`` and ``requeue`` are compare-and-set on the lease token: a worker
  whose lease was lost cannot overwrite what the current holder wrote, so a
  job's outcome is written once.
* ``cancel`` ends a QUEUED or RUNNING job at once; ``sweep`` turns ended jobs
  whose result TTL passed into EXPIRED (dropping request and result) and
  removes expired ones one more TTL later.

Every method raises :class:`~switchyard.proxy.jobs.records.StoreUnavailable`
when the store cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from switchyard.proxy.jobs.records import JobOutcome, JobRecord, JobState, Lease


class JobStore(ABC):
    name: str = "store"

    @abstractmethod
    async def submit(self, job: JobRecord, *, max_queued: int) -> tuple[JobRecord, bool]:
        """Stores ``job`` (state QUEUED); returns (the stored job, False), or (the earlier job, True) for a
        repeated idempotency key. Raises QueueFull past ``max_queued`` queued jobs."""

    @abstractmethod
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def by_owner(self, owner: str, limit: int, after: tuple[float, str] | None = None) -> list[JobRecord]:
        """``owner``'s jobs, newest first, without request and response; ``after`` is the last
        (create_time, job_id) of the previous page."""

    @abstractmethod
    async def claim(self, worker: str, limit: int, lease_s: float) -> list[Lease]: ...

    @abstractmethod
    async def renew(self, job_id: str, token: str, lease_s: float) -> bool: ...

    async def complete(
        self,
        job_id: str,
        token: str,
        state: JobState,
        *,
        response: bytes = b"",
        error_code: int = 0,
        error_message: str = "",
    ) -> bool:
        """Ends a RUNNING job (SUCCEEDED or FAILED) if ``token`` still holds its lease; False otherwise."""
        if state not in (JobState.SUCCEEDED, JobState.FAILED):
            raise ValueError(f"complete takes SUCCEEDED or FAILED, got {state}")
        return await self._complete(job_id, token, JobOutcome(state, response, error_code, error_message))

    @abstractmethod
    async def _complete(self, job_id: str, token: str, outcome: JobOutcome) -> bool:
        """:meth:`complete` once its arguments are checked."""

    @abstractmethod
    async def requeue(self, job_id: str, token: str, *, error_code: int, error_message: str) -> bool:
        """Puts a RUNNING job back in the queue for another attempt if ``token`` still holds its lease."""

    @abstractmethod
    async def cancel(self, job_id: str) -> JobRecord | None:
        """Cancels a QUEUED or RUNNING job; returns the job as it is afterwards (None: no such job)."""

    @abstractmethod
    async def sweep(self) -> int:
        """Expires ended jobs past their TTL and removes long-expired ones; returns how many changed."""

    @abstractmethod
    async def counts(self) -> dict[JobState, int]:
        """Jobs in the store by state (every state present)."""

    @abstractmethod
    async def close(self) -> None: ...
