"""Asynchronous jobs in the SDK: the :class:`Job` value and its conversion from the contract's messages.

Both clients (``Client`` and ``AsyncClient``) build job requests and read
``Job`` messages through this module; the calls themselves (``submit_job``,
``get_job``, ``watch_job``, ``cancel_job``, ``list_jobs``, ``wait``) live in
the clients. It does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from switchyard.v1 import jobs_pb2 as jpb

from . import messages
from .errors import SwitchyardError, error_from
from .results import InferResult, new_request_id

ENDED_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})
"""States a job never leaves."""


@dataclass(frozen=True, eq=False)
class Job:
    """A job as the gateway reports it; ``result`` once it succeeded, ``error`` when it failed or was cancelled."""

    job_id: str
    route: str
    state: str
    """"queued", "running", "succeeded", "failed", "cancelled" or "expired"."""
    attempts: int
    max_attempts: int
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    expire_time: datetime | None = None
    """When the result is dropped (the job becomes "expired")."""
    client_id: str = ""
    idempotency_key: str = ""
    request_id: str = ""
    result: InferResult | None = None
    error: SwitchyardError | None = None

    @property
    def done(self) -> bool:
        """True once the job has ended (its state will not change again, expiry aside)."""
        return self.state in ENDED_STATES


@dataclass(frozen=True)
class JobPage:
    """One page of ``list_jobs``: jobs newest first (without results) and the token of the next page."""

    jobs: list[Job] = field(default_factory=list)
    next_page_token: str = ""
    """Pass as ``page_token`` for the next page; empty on the last page."""


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def job_from(message: jpb.Job) -> Job:
    state = jpb.JobState.Name(message.state).removeprefix("JOB_STATE_").lower()
    result = None
    if message.HasField("response"):
        result = messages.infer_result(message.response, request_id=message.request_id)
    error = error_from(message.error, request_id=message.request_id or None) if message.HasField("error") else None
    return Job(
        job_id=message.job_id,
        route=message.route,
        state=state,
        attempts=message.attempts,
        max_attempts=message.max_attempts,
        create_time=_time(message.create_time, message.HasField("create_time")),
        start_time=_time(message.start_time, message.HasField("start_time")),
        end_time=_time(message.end_time, message.HasField("end_time")),
        expire_time=_time(message.expire_time, message.HasField("expire_time")),
        client_id=message.client_id,
        idempotency_key=message.idempotency_key,
        request_id=message.request_id,
        result=result,
        error=error,
    )


def page_from(message: jpb.ListJobsResponse) -> JobPage:
    return JobPage([job_from(job) for job in message.jobs], message.next_page_token)


def submit_request(
    route: str,
    inputs: Mapping[str, npt.ArrayLike],
    *,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
    model_versions: Mapping[str, str | int] | None = None,
    bypass_cache: bool = False,
    data_key: str | None = None,
    idempotency_key: str | None = None,
    result_ttl: float | None = None,
    max_attempts: int | None = None,
    client_id: str | None = None,
) -> jpb.SubmitJobRequest:
    """A ``SubmitJobRequest``. Without ``idempotency_key`` one is made up, so a retried submit makes one job."""
    if result_ttl is not None and not (math.isfinite(result_ttl) and result_ttl > 0):
        raise ValueError(f"result_ttl must be a number of seconds > 0, got {result_ttl!r}")
    if max_attempts is not None and (isinstance(max_attempts, bool) or max_attempts < 1):
        raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
    request = jpb.SubmitJobRequest(
        request=messages.infer_request(
            route,
            inputs,
            outputs=outputs,
            request_id=request_id,
            model_versions=model_versions,
            bypass_cache=bypass_cache,
            data_key=data_key,
        ),
        idempotency_key=idempotency_key or new_request_id(),
        max_attempts=max_attempts or 0,
        client_id=client_id or "",
    )
    if result_ttl is not None:
        request.result_ttl.FromNanoseconds(round(result_ttl * 1e9))
    return request


def list_request(
    *, client_id: str | None = None, page_size: int | None = None, page_token: str | None = None
) -> jpb.ListJobsRequest:
    return jpb.ListJobsRequest(client_id=client_id or "", page_size=page_size or 0, page_token=page_token or "")
