"""The asyncio client: :class:`AsyncClient`, on a ``grpc.aio`` channel.

Owns the asyncio side of each call: the retry loop (decisions come from
``retry``), the deadline of every call, the ``InferStream`` pipeline, where
a writer task sends requests while the caller reads answers as they come, in
whatever order the gateway sends them, and ``InferProgressive``, read stage by
stage. Requests and answers are built by
``messages``; errors come from ``errors``. The channel is opened on first use,
inside the running event loop, so a client may be constructed anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import numpy.typing as npt

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc, jobs_pb2_grpc
from switchyard.v1 import jobs_pb2 as jpb
from switchyard.v1.channel import channel_options

from . import jobs, messages
from .errors import SwitchyardError, Unknown, error_from, rpc_code
from .results import InferResult, ProgressiveResult, RouteInfo, StreamRequest
from .retry import DEFAULT_RETRY_POLICY, CallPolicy, RetryPolicy, check_timeout
from .shared_stream import SharedStream, SharedStreams
from .tls import Tls, credentials_of

if TYPE_CHECKING:
    from typing import Self


class AsyncClient:
    """Asyncio client of a Switchyard gateway.

    ``default_timeout`` is the deadline, in seconds, of every call that names
    none (None: no deadline). ``retries`` applies to idempotent calls that fail
    with ``UNAVAILABLE`` (None: never retry). ``metadata`` goes with every call.
    Without ``channel_credentials`` or ``tls`` the channel is plaintext; ``tls``
    (a :class:`~switchyard.client.Tls`, e.g. ``Tls.from_files(ca_file=...)``)
    or ``channel_credentials`` (``grpc.ssl_channel_credentials(...)``) make it
    TLS or mutual TLS. ``api_key``
    sends ``authorization: Bearer <api_key>`` with every call.

    ``stream_calls=True`` carries :meth:`infer` calls on ``InferStream``
    streams shared by every call of this client (up to ``streams`` of them,
    opened as the calls in flight grow, each call on the one with the fewest
    waiting; see
    :mod:`switchyard.client.shared_stream`): cheaper per call under
    concurrency, with the same deadlines, retries, errors and cancellation as
    unary calls.

    Use as ``async with AsyncClient("host:port") as client: ...`` or call
    :meth:`close` when done.
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
        stream_calls: bool = False,
        streams: int = 8,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.target = target
        self.stream_calls = stream_calls
        self._calls = CallPolicy(default_timeout, retries)
        self._metadata = messages.call_metadata(metadata, api_key=api_key)
        self._credentials = credentials_of(channel_credentials, tls)
        self._channel: grpc.aio.Channel | None = None
        self._stub: gateway_pb2_grpc.GatewayStub | None = None
        self._jobs_stub: jobs_pb2_grpc.JobsStub | None = None
        self._closed = False
        self._streams = streams
        self._shared: SharedStreams | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls still running are cancelled. Idempotent."""
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()
        channel, self._channel, self._stub, self._jobs_stub = self._channel, None, None, None
        if channel is not None:
            await channel.close()

    def _gateway(self) -> gateway_pb2_grpc.GatewayStub:
        if self._closed:
            raise RuntimeError("AsyncClient is closed")
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=channel_options())
            else:
                self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=channel_options())
            self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        return self._stub

    def _jobs(self) -> jobs_pb2_grpc.JobsStub:
        self._gateway()  # opens the channel; a closed client refuses the call
        if self._jobs_stub is None:
            self._jobs_stub = jobs_pb2_grpc.JobsStub(self._channel)
        return self._jobs_stub

    async def _unary(
        self, method: Any, request: Any, *, timeout: float | None, idempotent: bool, request_id: str | None = None
    ) -> Any:
        schedule = self._calls.schedule(timeout, idempotent=idempotent)
        while True:
            try:
                return await method(request, timeout=schedule.timeout(), metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                delay = schedule.retry_after(rpc_code(error))
                if delay is None:
                    raise error_from(error, request_id=request_id) from error
            await asyncio.sleep(delay)

    async def routes(self, *, timeout: float | None = None) -> list[RouteInfo]:
        """Every route the gateway serves, sorted by name."""
        response: pb.ListRoutesResponse = await self._unary(
            self._gateway().ListRoutes, pb.ListRoutesRequest(), timeout=timeout, idempotent=True
        )
        return [messages.route_info(info) for info in response.routes]

    async def route(self, name: str, *, timeout: float | None = None) -> RouteInfo:
        """One route's description; raises ``NotFound`` for an unknown name."""
        info: pb.RouteInfo = await self._unary(
            self._gateway().GetRoute, pb.GetRouteRequest(name=name), timeout=timeout, idempotent=True
        )
        return messages.route_info(info)

    async def infer(
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

        ``outputs`` selects outputs (default: all); ``model_versions`` pins
        model name -> version; ``request_id`` defaults to a fresh id, the same
        on every retry. ``bypass_cache`` computes a fresh answer (which still
        refreshes the cache). ``data_key`` (up to 128 characters) names these
        inputs in the route's data cache, so a route with one reuses the
        pre-processed inputs stored under that key instead of hashing the input
        bytes. ``idempotent=False`` turns retries off for routes whose calls
        must not run twice. A parallel route's branches that failed or were
        late under the ``partial`` policy are in ``InferResult.missing``.
        Raises a ``SwitchyardError`` subclass on failure.
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
        if self.stream_calls:
            response = await self._streamed(request, timeout=timeout, idempotent=idempotent)
        else:
            response = await self._unary(
                self._gateway().Infer, request, timeout=timeout, idempotent=idempotent, request_id=request.request_id
            )
        return messages.infer_result(response, request_id=request.request_id)

    async def _streamed(self, request: pb.InferRequest, *, timeout: float | None, idempotent: bool) -> pb.InferResponse:
        """``request`` on the shared stream, retried as :meth:`_unary` would; unary if its id is already waiting."""
        shared = self._shared_stream()
        assert self._shared is not None
        if self._shared.carries(request.request_id):
            response: pb.InferResponse = await self._unary(
                self._gateway().Infer, request, timeout=timeout, idempotent=idempotent, request_id=request.request_id
            )
            return response
        schedule = self._calls.schedule(timeout, idempotent=idempotent)
        while True:
            try:
                return await shared.infer(request, schedule.timeout())
            except SwitchyardError as error:
                delay = schedule.retry_after(error.code)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    def _shared_stream(self) -> SharedStream:
        self._gateway()  # a closed client refuses the call
        if self._shared is None:
            self._shared = SharedStreams(lambda: self._gateway().InferStream(metadata=self._metadata), self._streams)
        return self._shared.least_busy()

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
    ) -> AsyncGenerator[ProgressiveResult, None]:
        """Runs one request through a progressive ``route`` and yields each stage's answer as it arrives.

        Use as ``async for item in client.infer_progressive(...)``: the fast
        stage's :class:`ProgressiveResult` comes as soon as the gateway sends
        it, better ones after it; ``final`` marks the last. A stage that failed
        is yielded with ``error`` set (and later stages may still answer). A
        route of another kind answers with one final message. Arguments are
        those of :meth:`infer`; ``timeout`` (or the default) bounds the whole
        call, every stage included.

        Retries: a call the gateway refuses with ``UNAVAILABLE`` before any
        message arrived is retried like ``infer`` (same ``request_id``, within
        the deadline; never with ``idempotent=False``). Once a message has
        arrived nothing is retried: a failure of the call itself (gateway down,
        deadline passed) raises its ``SwitchyardError`` after the messages
        already yielded. The call starts when iteration does; leaving the loop
        early cancels it (wrap the iterator in ``contextlib.aclosing`` to do so
        at once).
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
        if self._closed:
            raise RuntimeError("AsyncClient is closed")
        return self._progressive(request, timeout=timeout, idempotent=idempotent)

    async def _progressive(
        self, request: pb.InferRequest, *, timeout: float | None, idempotent: bool
    ) -> AsyncGenerator[ProgressiveResult, None]:
        schedule = self._calls.schedule(timeout, idempotent=idempotent)
        while True:
            call = self._gateway().InferProgressive(request, timeout=schedule.timeout(), metadata=self._metadata)
            received = False
            delay = 0.0
            try:
                while True:
                    try:
                        message = await call.read()
                    except grpc.aio.AioRpcError as error:
                        # Once a stage has answered, a retry would repeat it: only a refused call is retried.
                        retry_after = None if received else schedule.retry_after(rpc_code(error))
                        if retry_after is None:
                            raise error_from(error, request_id=request.request_id) from error
                        delay = retry_after
                        break
                    if message is grpc.aio.EOF:
                        return
                    received = True
                    yield messages.progressive_result(message, request_id=request.request_id)
            finally:
                call.cancel()  # no-op once the RPC is over
            await asyncio.sleep(delay)

    # -- asynchronous jobs ----------------------------------------------------

    async def submit_job(
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
        """Submits one request through ``route`` as a job and returns its id as soon as the job is stored.

        The request is checked now (``NotFound`` for an unknown route,
        ``InvalidArgument`` naming ``request.inputs[...]`` for bad inputs); the
        job runs later on a gateway worker. ``idempotency_key`` (made up when
        not given) makes a retried submit answer with the same job, so submits
        are retried on ``UNAVAILABLE`` like ``infer``. ``result_ttl`` (seconds)
        is how long the result is kept after the job ended; ``max_attempts``
        how many runs it may take; ``client_id`` labels the job for
        ``list_jobs`` when the gateway has no API keys. ``ResourceExhausted``
        means the queue is full.
        """
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
        response: jpb.SubmitJobResponse = await self._unary(
            self._jobs().SubmitJob, request, timeout=timeout, idempotent=True, request_id=request.request.request_id
        )
        return response.job_id

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """The job's state, with its result once it succeeded (``NotFound`` for an unknown or removed job)."""
        message: jpb.Job = await self._unary(
            self._jobs().GetJob, jpb.GetJobRequest(job_id=job_id), timeout=timeout, idempotent=True
        )
        return jobs.job_from(message)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """Cancels the job (a queued job never runs, a running one is stopped); returns its state afterwards."""
        message: jpb.Job = await self._unary(
            self._jobs().CancelJob, jpb.CancelJobRequest(job_id=job_id), timeout=timeout, idempotent=True
        )
        return jobs.job_from(message)

    async def list_jobs(
        self,
        *,
        client_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
    ) -> jobs.JobPage:
        """One page of the caller's jobs, newest first, without results."""
        request = jobs.list_request(client_id=client_id, page_size=page_size, page_token=page_token)
        response: jpb.ListJobsResponse = await self._unary(
            self._jobs().ListJobs, request, timeout=timeout, idempotent=True
        )
        return jobs.page_from(response)

    async def watch_job(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[jobs.Job]:
        """Yields the job's state now, then each change (state or attempt), ending after the job has ended.

        The last item carries the result (or the error). ``timeout`` (or the
        default) bounds the whole watch; leaving the loop early cancels it.
        """
        deadline = self._calls.deadline(timeout)
        call = self._jobs().WatchJob(
            jpb.WatchJobRequest(job_id=job_id), timeout=deadline.remaining(), metadata=self._metadata
        )
        try:
            while True:
                try:
                    message = await call.read()
                except grpc.aio.AioRpcError as error:
                    raise error_from(error) from error
                if message is grpc.aio.EOF:
                    return
                yield jobs.job_from(message)
        finally:
            call.cancel()  # no-op once the RPC is over

    async def wait(self, job_id: str, *, timeout: float | None = None) -> jobs.Job:
        """Waits until the job has ended and returns it (``result`` or ``error`` set); ``timeout`` bounds the wait."""
        last: jobs.Job | None = None
        async for job in self.watch_job(job_id, timeout=timeout):
            last = job
        if last is None or not last.done:
            raise Unknown(f"job {job_id}: the watch ended before the job did")
        return last

    async def infer_stream(
        self,
        requests: AsyncIterable[StreamRequest] | Iterable[StreamRequest],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[InferResult | SwitchyardError]:
        """Pipelines ``requests`` on one ``InferStream`` and yields each answer as it arrives.

        Requests are sent while answers are read, so a request iterable may
        wait on earlier answers. Answers come in the gateway's order, not the
        requests': match them by ``request_id``. A request that failed is
        yielded as its ``SwitchyardError`` (with that ``request_id``) and the
        stream goes on. If the stream itself fails (gateway down, deadline
        ``timeout`` or the default passed) the error is raised and requests
        not yet answered have no answer; streams are not retried. If
        ``requests`` raises, or holds a duplicate ``request_id``, sending stops,
        answers to what was sent still arrive, then that exception is raised.
        Leaving the loop early cancels the stream (wrap the iterator in
        ``contextlib.aclosing`` to do so at once).
        """
        deadline = self._calls.deadline(timeout)
        call = self._gateway().InferStream(timeout=deadline.remaining(), metadata=self._metadata)
        writer = asyncio.ensure_future(_send_all(call, requests))
        try:
            while True:
                try:
                    message = await call.read()
                except grpc.aio.AioRpcError as error:
                    raise error_from(error) from error
                if message is grpc.aio.EOF:
                    break
                yield messages.stream_item(message)
            # A writer still running here was cut off by the gateway ending the
            # stream; the finally below stops it.
            failure = writer.result() if writer.done() else None
            if failure is not None:
                raise failure
        finally:
            call.cancel()  # no-op once the RPC is over
            if not writer.done():
                writer.cancel()
            # asyncio.wait raises our own cancellation, never the writer's.
            await asyncio.wait([writer])
            if not writer.cancelled():
                writer.exception()  # retrieved, so asyncio does not log it as lost


async def _send_all(call: Any, requests: AsyncIterable[StreamRequest] | Iterable[StreamRequest]) -> Exception | None:
    """Writes every request on the stream, then half-closes it.

    Returns what stopped the requests early (an exception from the caller's
    iterable or a request that cannot be encoded), so the reader can raise it
    after the answers to what was sent.
    """
    seen: set[str] = set()
    failure: Exception | None = None
    try:
        if isinstance(requests, AsyncIterable):
            async for request in requests:
                if not await _send(call, messages.stream_request(request, seen)):
                    return None
        else:
            for request in requests:
                if not await _send(call, messages.stream_request(request, seen)):
                    return None
    except Exception as error:  # handed to the reader, raised after the answers
        failure = error
    try:
        await call.done_writing()  # a no-op once the RPC is over
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    return failure


async def _send(call: Any, message: pb.InferRequest) -> bool:
    """Writes one request; False once the RPC is over (the reader reports why)."""
    try:
        await call.write(message)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return False
    return True
