"""The Triton backend client: one long-lived gRPC channel per process.

Speaks the Open Inference Protocol through tritonclient's generated stubs
(``tritonclient.grpc.service_pb2``) on a ``grpc.aio`` channel built by the
shared option factory. Using the stubs directly, rather than
``InferenceServerClient.infer``, lets tensors travel as the raw bytes the
client sent: no NumPy round trip, no copy beyond protobuf's own. Every call
ends for its caller at the caller's deadline, and is never cancelled under
Triton (see ``infer`` and ``finished``); every failure becomes a
:class:`~switchyard.proxy.errors.GatewayError` here and nowhere else.

Backend faults (see ``breaker`` and ``retry``):

* a :class:`~switchyard.proxy.backend.breaker.CircuitBreaker` counts
  connection-level failures (UNAVAILABLE from the channel, not a model's own
  error); once open, every call fails fast with UNAVAILABLE without touching
  the network, while a background prober, after each cool-down, waits for
  the channel to connect again and sends one ``ServerReady``: Triton's answer
  closes the circuit;
* ``infer`` retries UNAVAILABLE once, after a few milliseconds, when that is
  safe (the request never left: connection refused; or the call is
  idempotent, as inference on our models is), when the deadline leaves time
  for it, and when the :class:`~switchyard.proxy.backend.retry.RetryBudget`
  has a token.

With a :class:`~switchyard.proxy.backend.shared_memory.SharedMemoryPool`
(Triton on the same host), large inputs travel through shared-memory slots
instead of the message: the region is registered on first use, registered
again when Triton no longer knows it (a restarted Triton: the call is sent
once more), and unregistered on ``close``. A slot goes back to the pool once
Triton has answered; a call that ended without Triton's answer quarantines
its slots (see that module).

It owns transport and metadata, not validation or routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from prometheus_client import Counter, Gauge
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.proxy import errors, metrics, tracing
from switchyard.proxy.backend.breaker import CircuitBreaker, CircuitState
from switchyard.proxy.backend.cuda_shared_memory import CudaSharedMemoryPool, DeviceTensor
from switchyard.proxy.backend.retry import RETRIES, RETRIES_SKIPPED, RetryBudget
from switchyard.proxy.backend.shared_memory import SHM_INPUTS, SharedMemoryPool, SlotPool
from switchyard.proxy.tensor_spec import TensorLike, TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.channel import channel_options

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RETRY_BACKOFF_S = 0.01
"""Mean pause before the one retry of a call (jittered by ±50 %)."""

MIN_ATTEMPT_S = 0.02
"""A retry is sent only if at least this much of the deadline is left after the pause."""

PROBE_TIMEOUT_S = 1.0
"""How long the half-open probe (sent once the channel has connected) waits for Triton's ``ServerReady``."""

SHM_REGISTER_TIMEOUT_S = 2.0
"""How long registering (or unregistering) the shared-memory region with Triton may take."""

SHM_REGISTER_RETRY_S = 5.0
"""After a failed registration, inputs travel as bytes for this long before registering is tried again."""

# Codes with which Triton itself refused or answered a request (it holds nothing of it afterwards),
# or the request never left. Others (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE, INTERNAL, UNKNOWN, ...)
# may mean it is still queued in Triton.
_ANSWERED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

DEADLINE_MARGIN_S = 1.0
"""How much longer than the caller's deadline a backend call's own gRPC timeout runs (see ``infer``)."""

LATENCY_HALF_LIFE_S = 2.0
"""How fast an endpoint's remembered latency fades without new answers (see ``TritonBackend.cost``)."""

BACKEND_REQUESTS = Counter(
    "switchyard_backend_requests",
    "Inference calls sent to a Triton endpoint, by endpoint (host:port) and the status the gateway made of them.",
    ["endpoint", "code"],
)
BACKEND_INFLIGHT = Gauge(
    "switchyard_backend_inflight_requests",
    "Inference calls in flight to a Triton endpoint, by endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)

RECONNECT_BACKOFF_MS = (50, 100)
"""The backend channel's reconnect backoff (initial, max): a connection attempt to a
down Triton is one refused SYN, and the first one after Triton is back ends the outage."""

# Phrases of gRPC core's own UNAVAILABLE details: the request never left this process.
_NOT_SENT = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "connections to all backends failing",
    "dns resolution failed",
    "name resolution",
    "no route to host",
)
# ... or the connection broke while the call was on it (it may have reached Triton).
_TRANSPORT = _NOT_SENT + (
    "connection reset",
    "stream removed",
    "socket closed",
    "broken pipe",
    "goaway",
    "transport closed",
    "endpoint closing",
    "keepalive",
    "connection aborted",
    "end of tcp stream",
)


@dataclass(frozen=True)
class Failure:
    """How a failed backend call failed, as far as faults are concerned."""

    connection: bool
    """UNAVAILABLE from the channel (refused, reset, closed), not from Triton."""
    not_sent: bool
    """The request certainly never reached Triton (no connection could be made)."""


def classify(exc: grpc.aio.AioRpcError, channel_state: grpc.ChannelConnectivity) -> Failure:
    """Tells a connection failure from Triton's own errors (Triton answers on a READY channel, in its words)."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return Failure(connection=False, not_sent=False)
    details = (exc.details() or "").lower()
    not_sent = any(p in details for p in _NOT_SENT)
    transport = not_sent or any(p in details for p in _TRANSPORT)
    return Failure(connection=transport or channel_state is not grpc.ChannelConnectivity.READY, not_sent=not_sent)


def _unknown_region(exc: grpc.aio.AioRpcError) -> bool:
    """Triton's answer to a request naming a shared-memory region it does not know (e.g. after a restart)."""
    details = (exc.details() or "").lower()
    return "shared memory region" in details and ("unable to find" in details or "not found" in details)


async def finished(call: grpc.aio.UnaryUnaryCall[Any, R], wait_s: float | None = None) -> R:
    """The reply of ``call``; if the caller is cancelled meanwhile, the call runs on to its own end, unread.

    ``wait_s``: wait at most this long (TimeoutError after it; the call goes on).

    Awaiting a grpc.aio call and being cancelled cancels the call, and grpcio
    (up to at least 1.85) then leaks the native operation array of the batch
    in flight (grpc/grpc#43360: about 0.5 KiB per call). A gateway cancels its
    backend call whenever its own caller cancels or runs out of time, so that
    leak grew without bound under client timeouts. Here the caller waits on a
    future of its own, completed by the call's done callback: cancelling the
    caller cancels only that future. The call keeps its deadline (the
    caller's), so it ends by then, answered or DEADLINE_EXCEEDED, and its
    memory is freed normally. Triton does the work of a call nobody waits for
    any more; it could not stop a queued request reliably anyway (Triton 2.51
    has cancellation races that can crash it).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    call.add_done_callback(lambda _call: None if done.done() else done.set_result(True))
    if wait_s is None:
        await done
    else:
        # A timer completing the future rather than asyncio.timeout: no cancellation to unwind on the way.
        timer = loop.call_later(wait_s, lambda: None if done.done() else done.set_result(False))
        try:
            if not await done:
                raise TimeoutError
        finally:
            timer.cancel()
    return await call  # finished: its reply at once, or its AioRpcError


@dataclass(frozen=True)
class ModelInfo:
    """What the proxy needs to know of a model, read from Triton at start-up."""

    name: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    instances: int = 1
    """Model instances Triton runs (its instance groups' counts): calls it executes at once."""


class InferResult:
    """One call's answer: the model and version that answered and their outputs.

    A result made from Triton's reply keeps the reply and builds the
    :class:`pb.Tensor` list only when asked for it (:attr:`outputs`):
    :meth:`add_outputs_to` writes the reply's tensors straight into a
    response, so a route without post-processing copies Triton's raw output
    bytes once, into the message it answers with.
    """

    __slots__ = ("_outputs", "_reply", "model", "version")

    def __init__(
        self,
        model: str,
        version: str,
        outputs: list[pb.Tensor] | None = None,
        *,
        reply: service_pb2.ModelInferResponse | None = None,
    ) -> None:
        if (outputs is None) == (reply is None):
            raise ValueError("an InferResult holds either outputs or Triton's reply")
        self.model = model
        self.version = version
        self._outputs = outputs
        self._reply = reply

    @property
    def outputs(self) -> list[pb.Tensor]:
        if self._outputs is None:
            reply = self._reply
            assert reply is not None
            self._outputs = [
                pb.Tensor(name=out.name, datatype=out.datatype, shape=out.shape, raw_data=raw)
                for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
            ]
        return self._outputs

    def add_outputs_to(self, target: Any) -> None:
        """Appends the outputs to ``target``, a repeated ``Tensor`` field (``InferResponse.outputs``)."""
        reply = self._reply
        if reply is None or self._outputs is not None:
            target.extend(self.outputs)
            return
        add = target.add
        for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
            add(name=out.name, datatype=out.datatype, shape=out.shape, raw_data=raw)


class InferBackend(Protocol):
    """What routes and the micro-batcher call: one Triton (:class:`TritonBackend`) or a pool of them."""

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Sequence[TensorLike],
        outputs: Sequence[str],
        *,
        timeout_s: float,
        request_id: str = "",
        idempotent: bool = True,
    ) -> InferResult: ...

    async def model_info(self, name: str, *, timeout_s: float) -> ModelInfo: ...


def _message_request(
    model: str,
    version: str,
    request_id: str,
    inputs: Sequence[TensorLike],
    raws: Sequence[bytes | None],
    outputs: Sequence[str],
) -> service_pb2.ModelInferRequest:
    """The ModelInferRequest whose inputs all travel in the message (``raws``: their bytes, in order)."""
    request = service_pb2.ModelInferRequest(
        model_name=model, model_version=version, id=request_id, raw_input_contents=raws
    )
    add = request.inputs.add
    for tensor in inputs:
        add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    if outputs:
        add_output = request.outputs.add
        for name in outputs:
            add_output(name=name)
    return request


class TritonBackend:
    """Async client of one Triton server. Create it inside the running event loop."""

    def __init__(
        self,
        url: str,
        *,
        max_message_bytes: int,
        breaker: CircuitBreaker | None = None,
        retry_budget: RetryBudget | None = None,
        shared_memory: SharedMemoryPool | None = None,
        cuda_shared_memory: CudaSharedMemoryPool | None = None,
        deadline_margin_s: float = DEADLINE_MARGIN_S,
    ) -> None:
        self.url = url
        self.deadline_margin_s = deadline_margin_s
        """Triton gets the caller's time left plus this; the gateway waits only the caller's time."""
        options = channel_options(max_message_bytes=max_message_bytes, reconnect_backoff_ms=RECONNECT_BACKOFF_MS)
        self._channel = grpc.aio.insecure_channel(url, options=options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.breaker = breaker or CircuitBreaker(url)
        self.retry_budget = retry_budget or RetryBudget()
        self._prober: asyncio.Task[None] | None = None
        self.breaker.add_listener(self._on_circuit)
        self.shared_memory = shared_memory
        self.cuda_shared_memory = cuda_shared_memory
        self._shm_lock = asyncio.Lock()
        self.outstanding = 0
        """Inference calls of this process on this endpoint now."""
        self._latency_s = 0.0
        self._latency_at = 0.0
        self._inflight = metrics.hot(BACKEND_INFLIGHT.labels(url))
        self._answers: dict[str, Counter] = {}

    def cost(self, now: float) -> float:
        """What sending one more call here is expected to cost: (calls outstanding + 1) x typical latency.

        The latency is a moving average of answered calls (weight 1/8 for the
        newest) that halves every ``LATENCY_HALF_LIFE_S`` without a new answer,
        so an endpoint that was slow and got no calls is tried again before
        long. A pool sends each call where this is least.
        """
        age = now - self._latency_at
        latency = self._latency_s * 0.5 ** (age / LATENCY_HALF_LIFE_S) if age > 0 else self._latency_s
        return (self.outstanding + 1) * max(latency, 1e-5)

    def _observe(self, elapsed_s: float) -> None:
        now = time.monotonic()
        age = now - self._latency_at
        decayed = self._latency_s * 0.5 ** (age / LATENCY_HALF_LIFE_S) if age > 0 else self._latency_s
        self._latency_s = elapsed_s if self._latency_at == 0.0 else decayed + (elapsed_s - decayed) / 8
        self._latency_at = now

    @property
    def circuit_closed(self) -> bool:
        """False while the circuit breaker fails calls fast (Triton unreachable)."""
        return self.breaker.closed

    async def close(self) -> None:
        self.breaker.remove_listener(self._on_circuit)
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        pools: list[SharedMemoryPool | CudaSharedMemoryPool | None] = [self.shared_memory, self.cuda_shared_memory]
        self.shared_memory = self.cuda_shared_memory = None
        for pool in pools:
            if pool is None:
                continue
            if pool.registered:
                try:
                    if isinstance(pool, CudaSharedMemoryPool):
                        await self._stub.CudaSharedMemoryUnregister(
                            service_pb2.CudaSharedMemoryUnregisterRequest(name=pool.region),
                            timeout=SHM_REGISTER_TIMEOUT_S,
                        )
                    else:
                        await self._stub.SystemSharedMemoryUnregister(
                            service_pb2.SystemSharedMemoryUnregisterRequest(name=pool.region),
                            timeout=SHM_REGISTER_TIMEOUT_S,
                        )
                except grpc.aio.AioRpcError as exc:
                    log.warning("could not unregister shared memory %s from Triton: %s", pool.region, exc.details())
                pool.registered = False
            pool.close()
        await self._channel.close()

    # -- faults ------------------------------------------------------------------

    def _failed(self, exc: grpc.aio.AioRpcError) -> Failure:
        """Classifies a failed call and tells the breaker."""
        failure = classify(exc, self._channel.get_state())
        if failure.connection:
            self.breaker.record_failure()
        elif exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            self.breaker.record_success()  # Triton answered, with an error of its own
        return failure

    async def _unary(self, call: Callable[[], Awaitable[T]]) -> T:
        """One RPC through the breaker; AioRpcError passes through, classified."""
        self.breaker.check()
        try:
            reply = await call()
        except grpc.aio.AioRpcError as exc:
            self._failed(exc)
            raise
        self.breaker.record_success()
        return reply

    def _on_circuit(self, state: CircuitState) -> None:
        if state is CircuitState.OPEN and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe(), name=f"triton-probe {self.url}")

    async def _probe(self) -> None:
        """While the circuit is not closed: after each cool-down, once the channel connects, one ServerReady decides.

        Waiting for the channel to connect costs Triton nothing (the channel's
        own reconnect attempts are a refused SYN each), so a Triton that is back
        is noticed at the channel's next attempt, not at the next cool-down.
        """
        while not self.breaker.closed:
            await asyncio.sleep(self.breaker.retry_in())
            await self._connected()
            if not self.breaker.begin_probe():
                continue
            try:
                reply = await self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=PROBE_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                log.info("probe of Triton at %s failed: %s %s", self.url, exc.code().name, exc.details())
                self.breaker.probe_failed()
            except BaseException:
                self.breaker.probe_failed()
                raise
            else:
                # Any answer means Triton is reachable again; model readiness is the health monitor's.
                log.info("probe of Triton at %s: reachable, server ready=%s", self.url, reply.ready)
                self.breaker.probe_succeeded()

    async def _connected(self) -> None:
        """Returns once the channel is connected (asking it to connect whenever it goes idle)."""
        state = self._channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            await self._channel.wait_for_state_change(state)
            state = self._channel.get_state(try_to_connect=True)

    def _may_retry(self, failure: Failure, idempotent: bool, deadline: float, pause: float) -> bool:
        reason = None
        if not (failure.not_sent or idempotent):
            reason = "unsafe"
        elif not self.breaker.closed:
            reason = "circuit"
        elif deadline - asyncio.get_running_loop().time() < pause + MIN_ATTEMPT_S:
            reason = "deadline"
        elif not self.retry_budget.try_spend():
            reason = "budget"
        if reason is not None:
            RETRIES_SKIPPED.labels(self.url, reason).inc()
            return False
        RETRIES.labels(self.url).inc()
        return True

    # -- calls -------------------------------------------------------------------

    async def server_ready(self, timeout_s: float) -> bool:
        if not self.breaker.closed:
            return False
        try:
            reply = await self._unary(
                lambda: self._stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout_s)
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def model_ready(self, name: str, version: str = "", *, timeout_s: float) -> bool:
        """Whether Triton says the model is ready; False at once, without a call, while the circuit is open."""
        if not self.breaker.closed:
            return False
        request = service_pb2.ModelReadyRequest(name=name, version=version)
        try:
            reply = await self._unary(lambda: self._stub.ModelReady(request, timeout=timeout_s))
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def wait_models_ready(self, names: Sequence[str], *, timeout_s: float, poll_s: float = 0.25) -> None:
        """Waits until every model is ready; raises BackendUnavailable naming the ones that are not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = list(dict.fromkeys(names))
        while True:
            ready = await asyncio.gather(*(self.model_ready(n, timeout_s=min(2.0, timeout_s)) for n in pending))
            pending = [n for n, ok in zip(pending, ready, strict=True) if not ok]
            if not pending:
                return
            if loop.time() >= deadline:
                raise errors.BackendUnavailable(
                    f"models not ready in Triton at {self.url} after {timeout_s:g} s: {', '.join(pending)}"
                )
            await asyncio.sleep(poll_s)

    async def model_info(self, name: str, *, timeout_s: float) -> ModelInfo:
        try:
            meta = await self._unary(
                lambda: self._stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name), timeout=timeout_s)
            )
            config = await self._unary(
                lambda: self._stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=timeout_s)
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.from_backend(exc.code(), exc.details() or "", name) from None
        return ModelInfo(
            name=meta.name,
            versions=tuple(meta.versions),
            inputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.outputs),
            max_batch_size=int(config.config.max_batch_size),
            instances=max(1, sum(int(group.count) or 1 for group in config.config.instance_group)),
        )

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Sequence[TensorLike],
        outputs: Sequence[str],
        *,
        timeout_s: float,
        request_id: str = "",
        idempotent: bool = True,
        retry: bool = True,
    ) -> InferResult:
        """Runs one inference; ``inputs`` travel as their raw bytes (large ones through shared memory, if enabled).

        Fails fast with UNAVAILABLE while the circuit is open. UNAVAILABLE is
        retried once when safe (``idempotent``, or the request never left),
        within ``timeout_s`` and the retry budget, unless ``retry`` is False
        (a pool of endpoints sends the retry to another endpoint instead).

        The caller waits ``timeout_s`` at most (then DEADLINE_EXCEEDED); the
        call itself carries ``timeout_s + deadline_margin_s`` as its gRPC
        timeout, so that Triton answers it rather than cancels it when the
        caller's time runs out: Triton 2.51 can crash on a request cancelled
        in flight (seen twice in 5-minute soaks with 15 % of calls on 0.5-5 ms
        deadlines), and cancelling from this side leaks in grpcio (see
        :func:`finished`). The answer nobody waits for any more is dropped.
        """
        if timeout_s <= 0:
            raise errors.DeadlineExceeded(f"deadline exceeded before calling model {model!r}")
        self.outstanding += 1
        self._inflight.inc()
        code = "UNKNOWN"
        started = time.monotonic()
        try:
            if tracing.tracer is None:
                result = await self._infer(model, version, inputs, outputs, timeout_s, request_id, idempotent, retry)
            else:
                with tracing.backend_span(model, version, self.url):
                    result = await self._infer(
                        model, version, inputs, outputs, timeout_s, request_id, idempotent, retry
                    )
            code = "OK"
            self._observe(time.monotonic() - started)
            return result
        except errors.GatewayError as exc:
            code = exc.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.outstanding -= 1
            self._inflight.dec()
            answered = self._answers.get(code)
            if answered is None:
                answered = self._answers[code] = metrics.hot(BACKEND_REQUESTS.labels(self.url, code))
            answered.inc()

    async def _infer(
        self,
        model: str,
        version: str,
        inputs: Sequence[TensorLike],
        outputs: Sequence[str],
        timeout_s: float,
        request_id: str,
        idempotent: bool,
        retry: bool,
    ) -> InferResult:
        # Every read of a protobuf bytes field copies it: once. A device tensor is copied to the host only if it
        # must travel as bytes.
        raws: list[bytes | None] = [None if isinstance(t, DeviceTensor) else t.raw_data for t in inputs]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.breaker.check()
        self.retry_budget.deposit()
        slots: list[tuple[SlotPool, int]] = []  # the shared-memory slots this call holds
        in_flight = uncertain = False  # whether an attempt that used them may still be queued in Triton
        try:
            if self.shared_memory is None and self.cuda_shared_memory is None and None not in raws:
                request = _message_request(model, version, request_id, inputs, raws, outputs)  # no await
            else:
                request, slots = await self._infer_request(model, version, request_id, inputs, raws, outputs, deadline)
            retried = reregistered = False
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise errors.DeadlineExceeded(f"deadline exceeded before calling model {model!r}")
                try:
                    in_flight = bool(slots)
                    call = self._stub.ModelInfer(
                        request,
                        timeout=remaining + self.deadline_margin_s,
                        metadata=None if tracing.tracer is None else tracing.outgoing(),
                    )
                    reply = await finished(call, remaining)
                    in_flight = False
                except TimeoutError:
                    # The caller's deadline: the call goes on in Triton, unread, and ends by its own timeout.
                    raise errors.DeadlineExceeded(f"deadline exceeded waiting for model {model!r}") from None
                except grpc.aio.AioRpcError as exc:
                    in_flight = False
                    failure = self._failed(exc)
                    if slots and not (failure.not_sent or exc.code() in _ANSWERED):
                        uncertain = True
                    if slots and not uncertain and not reregistered and _unknown_region(exc):
                        # Triton no longer knows the region (it restarted): register it again, send once more.
                        reregistered = True
                        for pool, offset in slots:
                            if pool.registered:
                                log.info("Triton at %s lost shared memory %s: registering it again",
                                         self.url, pool.region)  # fmt: skip
                            pool.registered = False
                            pool.release(offset)
                        slots = []
                        request, slots = await self._infer_request(
                            model, version, request_id, inputs, raws, outputs, deadline
                        )
                        continue
                    if exc.code() is grpc.StatusCode.UNAVAILABLE:
                        pause = RETRY_BACKOFF_S * random.uniform(0.5, 1.5)
                        if retried or not retry:
                            RETRIES_SKIPPED.labels(self.url, "attempts" if retried else "pool").inc()
                        elif self._may_retry(failure, idempotent, deadline, pause):
                            retried = True
                            await asyncio.sleep(pause)
                            self.breaker.check()
                            continue
                    raise errors.from_backend(exc.code(), exc.details() or "", model) from None
                self.breaker.record_success()
                break
        finally:
            # A slot Triton may still read (no answer: cancelled, timed out, lost) stays out of use.
            keep_out = in_flight or uncertain
            for pool, offset in slots:
                (pool.quarantine if keep_out else pool.release)(offset)
        if len(reply.outputs) != len(reply.raw_output_contents):  # unexpected: an internal error
            raise ValueError(
                f"model {model!r} answered {len(reply.outputs)} outputs and "
                f"{len(reply.raw_output_contents)} raw output contents"
            )
        return InferResult(reply.model_name, reply.model_version, reply=reply)

    async def _infer_request(
        self,
        model: str,
        version: str,
        request_id: str,
        inputs: Sequence[TensorLike],
        raws: list[bytes | None],
        outputs: Sequence[str],
        deadline: float,
    ) -> tuple[service_pb2.ModelInferRequest, list[tuple[SlotPool, int]]]:
        """The ModelInferRequest, and the shared-memory slots it took (the caller gives them back).

        A device tensor goes through a CUDA slot when it can, anything else large
        through a system slot; the rest travels in the message (``raws`` holds
        the bytes, filled in here for a device tensor that needs them).
        """
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        system, cuda = self.shared_memory, self.cuda_shared_memory
        use_cuda = (
            cuda is not None
            and any(isinstance(t, DeviceTensor) and cuda.fits(t.nbytes) for t in inputs)
            and await self._shm_registered(cuda, deadline)
        )
        use_system = (
            system is not None
            and any(raw is not None and system.fits(len(raw)) for raw in raws)
            and await self._shm_registered(system, deadline)
        )
        slots: list[tuple[SlotPool, int]] = []
        for i, tensor in enumerate(inputs):
            entry = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            pool: SlotPool | None = None
            offset = nbytes = None
            if use_cuda and cuda is not None and isinstance(tensor, DeviceTensor) and cuda.fits(tensor.nbytes):
                pool, offset, nbytes = cuda, cuda.take(tensor), tensor.nbytes
            if offset is None:
                raw = raws[i]
                if raw is None:
                    raw = raws[i] = tensor.raw_data
                if use_system and system is not None and system.fits(len(raw)):
                    pool, offset, nbytes = system, system.take(raw), len(raw)
                if offset is None:
                    # Triton pairs raw_input_contents with the inputs that carry no shared-memory region, in order.
                    request.raw_input_contents.append(raw)
                    continue
            assert pool is not None and nbytes is not None
            slots.append((pool, offset))
            params = entry.parameters
            params["shared_memory_region"].string_param = pool.region
            params["shared_memory_byte_size"].int64_param = nbytes
            params["shared_memory_offset"].int64_param = offset
        for name in outputs:
            request.outputs.add(name=name)
        return request, slots

    async def _shm_registered(self, pool: SlotPool, deadline: float) -> bool:
        """Whether the region is registered with Triton, registering it now if needed (one caller at a time)."""
        if pool.registered:
            return True
        now = time.monotonic()
        if now < pool.retry_at or not self.breaker.closed:
            SHM_INPUTS.labels(pool.label, "bytes_unregistered").inc()
            return False
        async with self._shm_lock:
            if pool.registered:
                return True
            if time.monotonic() < pool.retry_at:
                SHM_INPUTS.labels(pool.label, "bytes_unregistered").inc()
                return False
            timeout = min(SHM_REGISTER_TIMEOUT_S, deadline - asyncio.get_running_loop().time())
            try:
                if timeout <= 0:
                    return False
                if isinstance(pool, CudaSharedMemoryPool):
                    await self._stub.CudaSharedMemoryRegister(
                        service_pb2.CudaSharedMemoryRegisterRequest(
                            name=pool.region,
                            raw_handle=pool.raw_handle,
                            device_id=pool.device_id,
                            byte_size=pool.byte_size,
                        ),
                        timeout=timeout,
                    )
                else:
                    assert isinstance(pool, SharedMemoryPool)
                    await self._stub.SystemSharedMemoryRegister(
                        service_pb2.SystemSharedMemoryRegisterRequest(
                            name=pool.region, key=pool.key, offset=0, byte_size=pool.byte_size
                        ),
                        timeout=timeout,
                    )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:  # else: an earlier answer was lost
                    pool.retry_at = time.monotonic() + SHM_REGISTER_RETRY_S
                    log.warning(
                        "cannot register shared memory %s with Triton at %s (%s: %s); large inputs go as bytes",
                        pool.region,
                        self.url,
                        exc.code().name,
                        exc.details(),
                    )
                    SHM_INPUTS.labels(pool.label, "bytes_unregistered").inc()
                    return False
            pool.registered = True
            log.info("registered shared memory %s (%d bytes) with Triton at %s", pool.region, pool.byte_size, self.url)
            return True
