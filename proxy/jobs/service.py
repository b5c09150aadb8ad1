"""The ``switchyard.v1.Jobs`` service: submit, get, watch, cancel and list jobs.

Owns the contract side of jobs: checking each call's fields (the job's
request is checked like ``Infer`` checks it, with field names prefixed by
``request.``), deciding whose jobs a caller may see, and turning store records
into ``Job`` messages. Whose: with API keys, the key's name owns the jobs it
submits and a key never sees another key's jobs (they are NOT_FOUND to it);
without keys, ``client_id`` (or ``switchyard-client-id`` metadata) labels
jobs for ListJobs and a job id alone reaches the job. Running jobs is the
runner's business (``proxy.jobs.runner``), keeping them the store's.

Every call is bounded by its deadline: store operations run under the call's
remaining time and answer DEADLINE_EXCEEDED when it runs out, UNAVAILABLE
when the store cannot be reached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from switchyard.proxy.errors import BackendError, DeadlineExceeded, GatewayError, InvalidInput, abort_with
from switchyard.proxy.grpc.security import KeyStore, caller
from switchyard.proxy.jobs.records import ENDED, TERMINAL, JobNotFound, JobRecord, JobState, new_job_id
from switchyard.proxy.jobs.runner import JobRunner
from switchyard.proxy.jobs.store import JobStore
from switchyard.proxy.lifecycle.context import new_request_id
from switchyard.proxy.lifecycle.dataplane import DataPlane
from switchyard.proxy.lifecycle.deadlines import wait_event
from switchyard.proxy.settings import GatewaySettings
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import jobs_pb2 as jpb
from switchyard.v1 import jobs_pb2_grpc

T = TypeVar("T")

CLIENT_ID_METADATA = "switchyard-client-id"
MAX_NAME_CHARS = 128
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def job_message(record: JobRecord, *, with_response: bool) -> jpb.Job:
    """The contract's view of a stored job; the result only when asked for and there is one."""
    message = jpb.Job(
        job_id=record.job_id,
        route=record.route,
        state=f"JOB_STATE_{record.state.value}",
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        client_id=record.owner,
        idempotency_key=record.idempotency_key,
        request_id=record.request_id,
    )
    for name in ("create_time", "start_time", "end_time", "expire_time"):
        stamp = _timestamp(getattr(record, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    if record.state in (JobState.FAILED, JobState.CANCELLED) and record.error_code:
        message.error.CopyFrom(pb.Status(code=record.error_code, message=record.error_message))
    if with_response and record.state is JobState.SUCCEEDED and record.response:
        message.response.ParseFromString(record.response)
    return message


def _page_token(record: JobRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.create_time!r}\n{record.job_id}".encode()).decode()


def _parse_page_token(token: str) -> tuple[float, str]:
    try:
        created, _, job_id = base64.urlsafe_b64decode(token.encode()).decode().partition("\n")
        if not _JOB_ID.match(job_id):
            raise ValueError(job_id)
        return float(created), job_id
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("page_token", "not a next_page_token from ListJobs") from None


class JobsService(jobs_pb2_grpc.JobsServicer):
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        plane: DataPlane,
        settings: GatewaySettings,
        *,
        keys: KeyStore | None = None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._plane = plane
        self._settings = settings
        self._keys = keys

    # -- helpers ----------------------------------------------------------------

    async def _bounded(self, context: grpc.aio.ServicerContext[Any, Any], what: str, call: Awaitable[T]) -> T:
        """Runs a store call within the call's remaining deadline."""
        remaining = context.time_remaining()
        try:
            async with asyncio.timeout(None if remaining is None else max(remaining, 0.0)):
                return await call
        except TimeoutError:
            raise DeadlineExceeded(f"deadline exceeded while {what}") from None

    def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The API key's name when keys are configured (the owner of what it submits), else None."""
        key = caller(self._keys, tuple(context.invocation_metadata() or ()))
        return None if key is None else key.name

    def _owner(self, client_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        key_name = self._caller(context)
        if key_name is not None:
            return key_name
        if not client_id:
            for name, value in context.invocation_metadata() or ():
                if name == CLIENT_ID_METADATA and isinstance(value, str):
                    client_id = value
        if len(client_id) > MAX_NAME_CHARS:
            raise InvalidInput("client_id", f"{len(client_id)} characters; at most {MAX_NAME_CHARS}")
        return client_id

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> JobRecord:
        record = await self._bounded(context, "reading the job", self._store.get(job_id))
        if record is None or not self._visible(record, context):
            raise JobNotFound(job_id)
        return record

    def _visible(self, record: JobRecord, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        key_name = self._caller(context)
        return key_name is None or record.owner == key_name

    @staticmethod
    def _check_job_id(job_id: str) -> str:
        if not job_id:
            raise InvalidInput("job_id", "missing: give the id SubmitJob returned")
        if not _JOB_ID.match(job_id):
            raise InvalidInput("job_id", f"{job_id[:40]!r} is not a job id (32 lowercase hex digits)")
        return job_id

    # -- the RPCs ---------------------------------------------------------------

    async def SubmitJob(
        self, request: jpb.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jpb.SubmitJobResponse:
        s = self._settings
        try:
            owner = self._owner(request.client_id, context)
            if not request.HasField("request"):
                raise InvalidInput("request", "missing: the InferRequest to run")
            infer = pb.InferRequest()
            infer.CopyFrom(request.request)
            try:
                self._plane.validate(infer)
            except GatewayError as exc:  # the same checks as Infer; the fields sit under `request.`
                raise BackendError(exc.code, f"request.{exc.message}") from None
            if len(request.idempotency_key) > MAX_NAME_CHARS:
                raise InvalidInput(
                    "idempotency_key", f"{len(request.idempotency_key)} characters; at most {MAX_NAME_CHARS}"
                )
            ttl_s = s.jobs_result_ttl_s
            if request.HasField("result_ttl"):
                given = request.result_ttl.ToNanoseconds() / 1e9
                if given < 0:
                    raise InvalidInput("result_ttl", f"must not be negative, got {given:g} s")
                if given > s.jobs_max_result_ttl_s:
                    raise InvalidInput("result_ttl", f"{given:g} s is over the maximum {s.jobs_max_result_ttl_s:g} s")
                ttl_s = given or ttl_s
            max_attempts = request.max_attempts or s.jobs_max_attempts
            if not 1 <= max_attempts <= s.jobs_max_attempts_limit:
                raise InvalidInput(
                    "max_attempts", f"must be 1 to {s.jobs_max_attempts_limit} (0: default), got {request.max_attempts}"
                )
            if not infer.request_id:
                infer.request_id = new_request_id()
            record = JobRecord(
                job_id=new_job_id(),
                owner=owner,
                route=infer.route,
                request_id=infer.request_id,
                state=JobState.QUEUED,
                max_attempts=max_attempts,
                create_time=time.time(),
                result_ttl_s=ttl_s,
                idempotency_key=request.idempotency_key,
                request=infer.SerializeToString(),
            )
            stored, duplicate = await self._bounded(
                context, "storing the job", self._store.submit(record, max_queued=s.jobs_max_queued)
            )
        except GatewayError as exc:
            await abort_with(context, exc)
        if not duplicate:
            self._runner.wake()
        response = jpb.SubmitJobResponse(
            job_id=stored.job_id, state=job_message(stored, with_response=False).state, duplicate=duplicate
        )
        response.create_time.FromNanoseconds(round(stored.create_time * 1e9))
        return response

    async def GetJob(self, request: jpb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]) -> jpb.Job:
        try:
            record = await self._job(self._check_job_id(request.job_id), context)
        except GatewayError as exc:
            await abort_with(context, exc)
        return job_message(record, with_response=True)

    async def WatchJob(
        self, request: jpb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[jpb.Job]:
        try:
            job_id = self._check_job_id(request.job_id)
            with self._runner.events.subscribe(job_id) as changed:
                last: tuple[JobState, int] | None = None
                while True:
                    changed.clear()
                    record = await self._job(job_id, context)
                    seen = (record.state, record.attempts)
                    if seen != last:
                        last = seen
                        yield job_message(record, with_response=record.state in TERMINAL)
                    if record.state in TERMINAL:
                        return
                    await wait_event(changed, self._settings.jobs_poll_interval_s)
        except GatewayError as exc:
            await abort_with(context, exc)

    async def CancelJob(self, request: jpb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]) -> jpb.Job:
        try:
            job_id = self._check_job_id(request.job_id)
            await self._job(job_id, context)  # not found, or another key's
            record = await self._bounded(context, "cancelling the job", self._store.cancel(job_id))
            if record is None:
                raise JobNotFound(job_id)
        except GatewayError as exc:
            await abort_with(context, exc)
        if record.state is JobState.CANCELLED:
            # Running here: stop it now. Running elsewhere: its heartbeat finds the lease gone.
            self._runner.cancel_local(job_id)
            self._runner.events.notify(job_id)
        return job_message(record, with_response=record.state in ENDED)

    async def ListJobs(
        self, request: jpb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jpb.ListJobsResponse:
        try:
            owner = self._owner(request.client_id, context)
            size = request.page_size or DEFAULT_PAGE_SIZE
            if not 1 <= size <= MAX_PAGE_SIZE:
                raise InvalidInput("page_size", f"must be 1 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE}), got {size}")
            after = _parse_page_token(request.page_token) if request.page_token else None
            records = await self._bounded(context, "listing jobs", self._store.by_owner(owner, size + 1, after))
        except GatewayError as exc:
            await abort_with(context, exc)
        page = records[:size]
        token = _page_token(page[-1]) if len(records) > size else ""
        return jpb.ListJobsResponse(jobs=[job_message(r, with_response=False) for r in page], next_page_token=token)
