"""The blocking client: :class:`Client`, on a synchronous gRPC channel.

Same API as ``aio.AsyncClient`` without ``await``, built on ``grpc``'s own
blocking channel (no event loop per call) and safe to share between threads.
Owns the blocking side of each call: the retry loop (decisions come from
``retry``, waits are ``time.sleep``), every call's deadline, ``InferStream``,
where gRPC sends the requests from its own thread while the caller reads
answers, and ``InferProgressive``, read stage by stage. Requests and answers
are built by ``messages``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import numpy.typing as npt

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc, jobs_pb2_grpc
from switchyard.v1 import jobs_pb2 as jpb
from switchyard.v1.channel import channel_options

from . import jobs, messages
from .errors import SwitchyardError, Unknown, error_from, rpc_code
from .results import InferResult, ProgressiveResult, RouteInfo, StreamRequest
from .retry import DEFAULT_RETRY_POLICY, CallPolicy, RetryPolicy, check_timeout
from .tls import Tls, credentials_of

if TYPE_CHECKING:
    from typing import Self


class Client:
    """Blocking client of a Switchyard gateway.

    ``default_timeout`` is the deadline, in seconds, of every call that names
    none (None: no deadline). ``retries`` applies to idempotent calls that fail
    with ``UNAVAILABLE`` (None: never retry). ``metadata`` goes with every call.
    Without ``channel_credentials`` or ``tls`` the channel is plaintext; ``tls``
    (a :class:`~switchyard.client.Tls`, e.g. ``Tls.from_files(ca_file=...)``)
    or ``channel_credentials`` (``grpc.ssl_channel_credentials(...)``) make it
    TLS or mutual TLS. ``api_key``
    sends ``authorization: Bearer <api_key>`` with every call.

    Use as ``with Client("host:port") as client: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        default_timeout: float | None = 30.0,
        retries: RetryPolicy | None = DEFAULT_RETRY_POLICY,
        metadata: messages.MetadataLike | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        self.target = target
        self._calls = CallPolicy(default_timeout, retries)
        self._metadata = messages.call_metadata(metadata, api_key=api_key)
        channel_credentials = credentials_of(channel_credentials, tls)
        if channel_credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel_options())
        else:
            self._channel = grpc.secure_channel(target, channel_credentials, options=channel_options())
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._jobs_stub = jobs_pb2_grpc.JobsStub(self._channel)
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls still running are cancelled. Idempotent."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def _gateway(self) -> gateway_pb2_grpc.GatewayStub:
        if self._closed:
            raise RuntimeError("Client is closed")
        return self._stub

    def _jobs(self) -> jobs_pb2_grpc.JobsStub:
        self._gateway()  # a closed client refuses the call
        return self._jobs_stub

    def _unary(
        self, method: Any, request: Any, *, timeout: float | None, idempotent: bool, request_id: str | None = None
    ) -> Any:
        schedule = self._calls.schedule(timeout, idempotent=idempotent)
        while True:
            try:
                return method(request, timeout=schedule.timeout(), metadata=self._metadata)
            except grpc.RpcError as error:
                delay = schedule.retry_after(rpc_code(error))
                if delay is None:
                    raise error_from(error, request_id=request_id) from error
            time.sleep(delay)

    def routes(self, *, timeout: float | None = None) -> list[RouteInfo]:
        """Every route the gateway serves, sorted by name."""
        response: pb.ListRoutesResponse = self._unary(
            self._gateway().ListRoutes, pb.ListRoutesRequest(), timeout=timeout, idempotent=True
        )
        return [messages.route_info(info) for info in response.routes]

    def route(self, name: str, *, timeout: float | None = None) -> RouteInfo:
        """One route's description; raises ``NotFound`` for an unknown name."""
        info: pb.RouteInfo = self._unary(
            self._gateway().GetRoute, pb.GetRouteRequest(name=name), timeout=timeout, idempotent=True
        )
        return messages.route_info(info)

    def infer(
        self,
        route: str,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        model_versions: Mapping[str, str | int] | None = None,
        bypass_cache: bool = False,
        data_key: str | None = None,
        idempotent: bool = True,
    ) -> InferResult:
        """Runs one request through ``route`` and returns its outputs as NumPy arrays.

        See ``AsyncClient.infer``; the arguments and errors are the same.
        """
        request = messages.infer_request(
            route,
            inputs,
            outputs=outputs,
            request_id=request_id,
            model_versions=model_versions,
            bypass_cache=bypass_cache,
            data_key=data_key,
        )
        response: pb.InferResponse = self._unary(
            self._gateway().Infer, request, timeout=timeout, idempotent=idempotent, request_id=request.request_id
        )
        return messages.infer_result(response, request_id=request.request_id)

    def infer_progressive(
        self,
        route: str,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        model_versions: Mapping[str, str | int] | None = None,
        bypass_cache: bool = False,
        data_key: str | None = None,
        idempotent: bool = True,
    ) -> Generator[ProgressiveResult, None, None]:
        """Runs one request through a progressive ``route`` and yields each stage's answer as it arrives.

        See ``AsyncClient.infer_progressive``; the arguments, retries and errors
        are the same. The call starts when iteration does; leaving the loop
        early (or closing the generator) cancels it.
        """
        request = messages.infer_request(
            route,
            inputs,
            outputs=outputs,
            request_id=request_id,
            model_versions=model_versions,
            bypass_cache=bypass_cache,
            data_key=data_key,
        )
        check_timeout(timeout)
        self._gateway()  # a closed client refuses the call now, not on the first next()
        return self._progressive(request, timeout=timeout, idempotent=idempotent)

    def _progressive(
        self, request: pb.InferRequest, *, timeout: float | None, idempotent: bool
    ) -> Generator[ProgressiveResult, None, None]:
        schedule = self._calls.schedule(timeout, idempotent=idempotent)
        while True:
            responses = self._gateway().InferProgressive(request, timeout=schedule.timeout(), metadata=self._metadata)
            received = False
            try:
                for message in responses:
                    received = True
                    yield messages.progressive_result(message, request_id=request.request_id)
                return
            except grpc.RpcError as error:
                # Once a stage has answered, a retry would repeat it: only a refused call is retried.
                delay = None if received else schedule.retry_after(rpc_code(error))
                if delay is None:
                    raise error_from(error, request_id=request.request_id) from error
            finally:
                responses.cancel()  # no-op once the RPC is over
            time.sleep(delay)

    # -- asynchronous jobs ----------------------------------------------------

    def submit_job(
        self,
        route: str,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        model_versions: Mapping[str, str | int] | None = None,
        bypass_cache: bool = False,
        data_key: str | None = None,
        idempotency_key: str | None = None,
        result_ttl: float | None = None,
        max_attempts: int | None = None,
        client_id: str | None = None,
    ) -> str:
        """Submits one request through ``route`` as a job and returns its id; see ``AsyncClient.submit_job``."""
        request = jobs.submit_request(
            route,
            inputs,
            outputs=outputs,
            request_id=request_id,
            model_versions=model_versions,
            bypass_cache=bypass_cache,
            data_key=data_key,
            idempotency_key=idempotency_key,
            result_ttl=result_ttl,
            max_attempts=max_attempts,
            client_id=client_id,
        )
        response: jpb.SubmitJobResponse = self._unary(
            self._jobs().SubmitJob, request, timeout=timeout, idempotent=True, request_id=request.request.request_id
        )
        return response.job_id

    def get_job(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """The job's state, with its result once it succeeded (``NotFound`` for an unknown or removed job)."""
        message: jpb.Job = self._unary(
            self._jobs().GetJob, jpb.GetJobRequest(job_id=job_id), timeout=timeout, idempotent=True
        )
        return jobs.job_from(message)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """Cancels the job (a queued job never runs, a running one is stopped); returns its state afterwards."""
        message: jpb.Job = self._unary(
            self._jobs().CancelJob, jpb.CancelJobRequest(job_id=job_id), timeout=timeout, idempotent=True
        )
        return jobs.job_from(message)

    def list_jobs(
        self,
        *,
        client_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> jobs.JobPage:
        """One page of the caller's jobs, newest first, without results."""
        request = jobs.list_request(client_id=client_id, page_size=page_size, page_token=page_token)
        response: jpb.ListJobsResponse = self._unary(self._jobs().ListJobs, request, timeout=timeout, idempotent=True)
        return jobs.page_from(response)

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> Iterator[jobs.Job]:
        """Yields the job's state now, then each change, ending after it has ended (see ``AsyncClient``)."""
        deadline = self._calls.deadline(timeout)
        responses = self._jobs().WatchJob(
            jpb.WatchJobRequest(job_id=job_id), timeout=deadline.remaining(), metadata=self._metadata
        )
        try:
            for message in responses:
                yield jobs.job_from(message)
        except grpc.RpcError as error:
            raise error_from(error) from error
        finally:
            responses.cancel()  # no-op once the RPC is over

    def wait(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """Waits until the job has ended and returns it (``result`` or ``error`` set); ``timeout`` bounds the wait."""
        last: jobs.Job | None = None
        for job in self.watch_job(job_id, timeout=timeout):
            last = job
        if last is None or not last.done:
            raise Unknown(f"job {job_id}: the watch ended before the job did")
        return last

    # -- streaming ------------------------------------------------------------

    def infer_stream(
        self, requests: Iterable[StreamRequest], *, timeout: float | None = None
    ) -> Iterator[InferResult | SwitchyardError]:
        """Pipelines ``requests`` on one ``InferStream`` and yields each answer as it arrives.

        gRPC pulls ``requests`` from its own thread while this one reads, so
        the iterable may block until earlier answers have come. Otherwise as
        ``AsyncClient.infer_stream``: answers in the gateway's order, matched by
        ``request_id``; a failed request is yielded as its ``SwitchyardError``;
        a failed stream raises; an exception from ``requests`` (or a duplicate
        ``request_id``) is raised after the answers to what was sent. Leaving
        the loop early (or closing the generator) cancels the stream.
        """
        deadline = self._calls.deadline(timeout)
        failures: list[Exception] = []
        responses = self._gateway().InferStream(
            _outgoing(requests, failures), timeout=deadline.remaining(), metadata=self._metadata
        )
        try:
            for message in responses:
                yield messages.stream_item(message)
        except grpc.RpcError as error:
            raise error_from(error) from error
        finally:
            responses.cancel()  # no-op once the RPC is over
        if failures:
            raise failures[0]


def _outgoing(requests: Iterable[StreamRequest], failures: list[Exception]) -> Iterator[pb.InferRequest]:
    """The request messages; on an error, records it and ends the requests (gRPC half-closes)."""
    seen: set[str] = set()
    try:
        for request in requests:
            yield messages.stream_request(request, seen)
    except Exception as error:  # handed to the reader, raised after the answers
        failures.append(error)
