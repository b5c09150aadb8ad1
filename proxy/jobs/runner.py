"""The job workers of one gateway process: claim, run, heartbeat, write the outcome once; and the sweeper.

:class:`JobRunner` keeps up to ``concurrency`` jobs running. It claims jobs
from the store when a slot is free (at once after a submit to this process,
else by polling: every ``poll_interval_s`` while there is work, backing off
to ``idle_poll_s`` while the queue stays empty, so an idle gateway spends no
CPU on the store), runs each through the gateway's own request lifecycle
(``DataPlane.infer``: admission, validation, cache, metrics), and renews the
job's lease while it runs. The outcome is written with the lease token
(compare-and-set): when the lease was lost meanwhile (the job was cancelled,
or this process stalled past the visibility timeout and another took the job
over), the write is refused and counted as stale.

* A heartbeat that finds the lease gone cancels the inference (that is how a
  CancelJob sent to another process reaches a running job); a CancelJob sent
  to this process cancels it at once (:meth:`JobRunner.cancel_local`).
* Errors that say "try again" (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``) put the
  job back in the queue after a short backoff while attempts remain; any other
  error, or the last attempt, ends it FAILED with the route's code and message.
* :meth:`JobRunner.stop` stops claiming, lets running jobs finish within the
  grace period and puts the rest back in the queue for another process.

The sweeper (one task per process; its work is idempotent) expires old
results, publishes ``switchyard_jobs{state}`` and reports the store's
reachability to health.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import grpc

from switchyard.proxy import metrics
from switchyard.proxy.errors import GatewayError
from switchyard.proxy.jobs.records import JobState, Lease, StoreUnavailable
from switchyard.proxy.jobs.store import JobStore
from switchyard.proxy.lifecycle.dataplane import Answer
from switchyard.proxy.lifecycle.deadlines import wait_event
from switchyard.proxy.settings import GatewaySettings
from switchyard.v1 import gateway_pb2 as pb

log = logging.getLogger(__name__)

Execute = Callable[[pb.InferRequest, float], Coroutine[Any, Any, Answer]]

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
SWEEP_INTERVAL_S = 5.0
MAX_BACKOFF_S = 5.0


class JobEvents:
    """In-process notifications of job changes, so a WatchJob on this process hears of them at once."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def notify(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]


class JobRunner:
    """This process's job workers: claims jobs, runs each as an inference, keeps its lease and records the end.

    Its knobs are the ``jobs_*`` settings (concurrency, lease, attempt deadline, polling).
    """

    def __init__(
        self,
        store: JobStore,
        execute: Execute,
        settings: GatewaySettings,
        *,
        worker_id: str,
        events: JobEvents | None = None,
        on_store_health: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.events = events or JobEvents()
        self._execute = execute
        self._on_store_health = on_store_health
        self._wake = asyncio.Event()
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._inferences: dict[str, asyncio.Task[Answer]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._store_ok: bool | None = None

    @property
    def heartbeat_s(self) -> float:
        return min(self.settings.jobs_visibility_timeout_s / 3, 2.0)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._sweep_loop(), name="jobs-sweep"),
        ]

    def wake(self) -> None:
        """A job was submitted here: look for work now rather than at the next poll."""
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        """Cancels the inference of ``job_id`` if this process runs it; True if it did."""
        inference = self._inferences.get(job_id)
        if inference is None or inference.done():
            return False
        inference.cancel()
        return True

    async def stop(self, grace_s: float) -> None:
        """Stops claiming; running jobs get ``grace_s`` to finish, the rest go back to the queue."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = list(self._jobs.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- claiming -------------------------------------------------------------

    async def _claim_loop(self) -> None:
        poll_s = self.settings.jobs_poll_interval_s
        idle_poll_s = max(poll_s, self.settings.jobs_idle_poll_s)
        wait_s = poll_s
        while not self._stopping:
            self._wake.clear()
            free = self.settings.jobs_concurrency - len(self._jobs)
            claimed = 0
            if free > 0:
                try:
                    leases = await self.store.claim(self.worker_id, free, self.settings.jobs_visibility_timeout_s)
                except StoreUnavailable as exc:
                    await self._store_health(False, exc.message)
                    leases = []
                except Exception:
                    log.exception("claiming jobs failed")
                    leases = []
                claimed = len(leases)
                for lease in leases:
                    task = asyncio.create_task(self._run(lease), name=f"job-{lease.job.job_id}")
                    self._jobs[lease.job.job_id] = task
                    task.add_done_callback(functools.partial(self._finished, lease.job.job_id))
            if claimed and claimed == free:
                continue  # every slot taken: the next loop waits for one to free up
            # Found nothing: wait twice as long next time, up to idle_poll_s. A
            # submit to this process, or a slot freeing up, wakes the loop at once.
            wait_s = poll_s if claimed or free <= 0 else min(wait_s * 2, idle_poll_s)
            await wait_event(self._wake, wait_s)

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._jobs.pop(job_id, None)
        self._wake.set()

    # -- one job --------------------------------------------------------------

    async def _run(self, lease: Lease) -> None:
        job = lease.job
        kind = "redelivery" if lease.redelivered else "first" if job.attempts == 1 else "retry"
        metrics.JOB_ATTEMPTS.labels(kind).inc()
        log.info("job %s: attempt %d of %d on route %s (%s)", job.job_id, job.attempts, job.max_attempts, job.route,
                 kind)  # fmt: skip
        self.events.notify(job.job_id)
        request = pb.InferRequest.FromString(job.request)
        inference = asyncio.create_task(self._execute(request, self.settings.jobs_timeout_s))
        self._inferences[job.job_id] = inference
        heartbeat = asyncio.create_task(self._heartbeat(lease, inference))
        try:
            try:
                outcome = (await inference).outcome()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # shutdown: handled below
                log.info("job %s: inference cancelled (the job was cancelled or its lease lost)", job.job_id)
                self.events.notify(job.job_id)
                return
            await self._finish(lease, outcome)
        except asyncio.CancelledError:
            # Shutdown past the grace period: hand the job back so another process runs it now,
            # rather than after the visibility timeout.
            inference.cancel()
            with contextlib.suppress(Exception):
                await self.store.requeue(
                    job.job_id, lease.token, error_code=grpc.StatusCode.UNAVAILABLE.value[0],
                    error_message="the gateway process running it shut down",
                )  # fmt: skip
            raise
        finally:
            heartbeat.cancel()
            self._inferences.pop(job.job_id, None)
            self.events.notify(job.job_id)

    async def _heartbeat(self, lease: Lease, inference: asyncio.Task[Answer]) -> None:
        job_id = lease.job.job_id
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                held = await self.store.renew(job_id, lease.token, self.settings.jobs_visibility_timeout_s)
            except StoreUnavailable as exc:
                log.warning("job %s: lease not renewed: %s", job_id, exc.message)
                continue
            if not held:
                inference.cancel()
                return

    async def _finish(self, lease: Lease, outcome: pb.InferResponse | GatewayError) -> None:
        job = lease.job
        if isinstance(outcome, GatewayError) and outcome.code in RETRYABLE and job.attempts < job.max_attempts:
            await asyncio.sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** (job.attempts - 1)))
            code, message = outcome.code.value[0], outcome.message
            requeued = await self._write(lambda: self.store.requeue(job.job_id, lease.token, error_code=code,
                                                                    error_message=message))  # fmt: skip
            log.info("job %s: %s (%s); %s", job.job_id, outcome.code.name, outcome.message,
                     "queued again" if requeued else "lease lost meanwhile")  # fmt: skip
            return
        if isinstance(outcome, GatewayError):
            state, response, code, message = JobState.FAILED, b"", outcome.code.value[0], outcome.message
        else:
            state, response, code, message = JobState.SUCCEEDED, outcome.SerializeToString(), 0, ""
        written = await self._write(
            lambda: self.store.complete(
                job.job_id, lease.token, state, response=response, error_code=code, error_message=message
            )
        )
        metrics.JOB_COMPLETIONS.labels("written" if written else "stale").inc()
        if written:
            metrics.JOB_LATENCY.labels(state.value).observe(max(0.0, time.time() - job.create_time))
            log.info("job %s: %s after %d attempt(s)", job.job_id, state.value, job.attempts)
        else:
            log.info("job %s: outcome %s discarded: the lease was lost (cancelled or taken over)", job.job_id, state)

    async def _write(self, write: Callable[[], Awaitable[bool]]) -> bool:
        """Runs a lease-checked write, retrying while the store is unreachable and the lease may still hold."""
        deadline = time.monotonic() + self.settings.jobs_visibility_timeout_s
        delay = 0.05
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("job outcome not written (the job will run again): %s", exc.message)
                    return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- the sweeper ----------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            try:
                await self.store.sweep()
                counts = await self.store.counts()
            except StoreUnavailable as exc:
                await self._store_health(False, exc.message)
            except Exception:
                log.exception("job sweep failed")
            else:
                for state, count in counts.items():
                    metrics.JOBS.labels(state.value).set(count)
                await self._store_health(True, "")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _store_health(self, ok: bool, reason: str) -> None:
        if ok != self._store_ok:
            if ok:
                log.info("job store %s is reachable", self.store.name)
            else:
                log.warning("job store %s is unavailable: %s", self.store.name, reason)
            self._store_ok = ok
            if self._on_store_health is not None:
                await self._on_store_health(ok)
