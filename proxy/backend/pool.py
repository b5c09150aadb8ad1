"""A pool of Triton endpoints: balancing, failover, readiness per endpoint and DNS discovery.

``triton_url`` names one endpoint (``host:port``), several (``a:8001,b:8001``)
or a DNS name (``dns:///triton-headless:8001``) re-resolved every
``dns_refresh_s``, one endpoint per address: a Kubernetes headless Service
gives one address per Triton pod. Each endpoint is a
:class:`~switchyard.proxy.backend.triton.TritonBackend` with its own channel,
circuit breaker, shared memory (system and, with the ops on a GPU, CUDA; only for endpoints on this host) and metrics
(label ``endpoint``); they share one retry budget.

* **Balancing.** A call goes to the endpoint where it is expected to cost
  least: (calls of this process outstanding there + 1) x its recent latency
  (``TritonBackend.cost``, a moving average that fades while the endpoint
  gets no calls, so a slow endpoint gets few and a recovered one is tried
  again), among those whose circuit is closed and that have its model ready
  (ties: in turn). When none has the model ready (readiness not polled yet, a
  lone endpoint), any endpoint with a closed circuit is tried.
* **Failover.** A call that fails with UNAVAILABLE on one endpoint (it died,
  refused the connection, or its circuit is open) is sent once more to
  another, within the call's deadline and the retry budget, when that is safe:
  the call is idempotent (inference on our models is), or it never left
  (circuit open). With one endpoint, the endpoint retries on itself instead.
* **Readiness.** :meth:`refresh` asks every endpoint whether each model is
  ready (the health monitor calls it every ``health_interval_s``, and at
  once when a circuit changes state). An endpoint whose circuit opens loses
  its ready models; when it closes again its models count as ready only once
  a poll says so, so a restarted Triton still loading its models takes no
  calls. A model is served while at least one endpoint has it ready.

It owns the choice of endpoint, not the call itself (``TritonBackend.infer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter, Gauge

from switchyard.proxy import errors
from switchyard.proxy.backend.breaker import CircuitOpen, CircuitState
from switchyard.proxy.backend.cuda_shared_memory import CudaSharedMemoryPool
from switchyard.proxy.backend.endpoints import DNS_PREFIX, address, is_local, parse_endpoints
from switchyard.proxy.backend.retry import RetryBudget
from switchyard.proxy.backend.shared_memory import SharedMemoryPool
from switchyard.proxy.backend.triton import MIN_ATTEMPT_S, InferResult, ModelInfo, TritonBackend
from switchyard.proxy.tensor_spec import TensorLike

log = logging.getLogger(__name__)

FAILOVERS = Counter(
    "switchyard_backend_failovers",
    "Calls sent to another Triton endpoint after UNAVAILABLE on the first, by the endpoint that failed.",
    ["endpoint"],
)
ENDPOINT_READY = Gauge(
    "switchyard_backend_endpoint_ready",
    "1 while a Triton endpoint's circuit is closed and every model the routes use is ready on it, by endpoint.",
    ["endpoint"],
    multiprocess_mode="livemin",
)

SharedMemoryFactory = Callable[[str], SharedMemoryPool | None]
"""Shared memory for an endpoint (its ``host:port``), or None; called only for endpoints on this host."""
CudaSharedMemoryFactory = Callable[[str], CudaSharedMemoryPool | None]
"""CUDA shared memory for an endpoint on this host, or None."""

Listener = Callable[[CircuitState], None]


class TritonPool:
    """The Triton endpoints of one gateway process (see the module docstring). Create it in the running loop."""

    def __init__(
        self,
        triton_url: str,
        *,
        max_message_bytes: int,
        shared_memory: SharedMemoryFactory | None = None,
        cuda_shared_memory: CudaSharedMemoryFactory | None = None,
        retry_budget: RetryBudget | None = None,
        dns_refresh_s: float = 5.0,
    ) -> None:
        self.triton_url = triton_url
        self._items = parse_endpoints(triton_url)
        self._dns = self._items[0].removeprefix(DNS_PREFIX) if self._items[0].startswith(DNS_PREFIX) else None
        self._max_message_bytes = max_message_bytes
        self._shared_memory = shared_memory
        self._cuda_shared_memory = cuda_shared_memory
        self.retry_budget = retry_budget or RetryBudget()
        self.dns_refresh_s = dns_refresh_s
        self.endpoints: dict[str, TritonBackend] = {}
        """Endpoints in use, by ``host:port``."""
        self._ready: dict[str, frozenset[str]] = {}
        self._listeners: list[Listener] = []
        self._turn = itertools.count()
        self._resolver: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        for item in [] if self._dns else self._items:
            self._add(item)

    # -- endpoints -------------------------------------------------------------------

    async def start(self) -> None:
        """Resolves a ``dns:///`` name (and keeps re-resolving it); nothing to do for a fixed list."""
        if self._dns is not None:
            await self._resolve()
            self._resolver = asyncio.create_task(self._keep_resolving(), name=f"triton-dns {self._dns}")

    def _add(self, endpoint: str) -> None:
        local = is_local(endpoint)
        backend = TritonBackend(
            endpoint,
            max_message_bytes=self._max_message_bytes,
            retry_budget=self.retry_budget,
            shared_memory=self._shared_memory(endpoint) if self._shared_memory is not None and local else None,
            cuda_shared_memory=(
                self._cuda_shared_memory(endpoint) if self._cuda_shared_memory is not None and local else None
            ),
        )
        backend.breaker.add_listener(functools.partial(self._on_circuit, endpoint))
        self.endpoints[endpoint] = backend
        self._ready[endpoint] = frozenset()
        ENDPOINT_READY.labels(endpoint).set(0)

    def _drop(self, endpoint: str) -> None:
        backend = self.endpoints.pop(endpoint)
        self._ready.pop(endpoint, None)
        ENDPOINT_READY.labels(endpoint).set(0)
        task = asyncio.create_task(self._close_when_idle(backend), name=f"triton-drop {endpoint}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_when_idle(backend: TritonBackend, patience_s: float = 30.0) -> None:
        """Closes an endpoint that left the pool once the calls it still had can have ended."""
        await asyncio.sleep(patience_s)
        await backend.close()

    async def _resolve(self) -> None:
        assert self._dns is not None
        host, _, port = self._dns.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve Triton endpoints %s: %s; keeping %d", self._dns, exc, len(self.endpoints))
            return
        found = sorted({address(str(info[4][0]), int(port)) for info in infos})
        for endpoint in found:
            if endpoint not in self.endpoints:
                log.info("Triton endpoint %s joins (from %s)", endpoint, self._dns)
                self._add(endpoint)
        for endpoint in [e for e in self.endpoints if e not in found]:
            log.info("Triton endpoint %s leaves (no longer in %s)", endpoint, self._dns)
            self._drop(endpoint)
        if found:
            self._wake()

    async def _keep_resolving(self) -> None:
        while True:
            await asyncio.sleep(self.dns_refresh_s)
            await self._resolve()

    async def close(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resolver
        backends = list(self.endpoints.values())
        self.endpoints.clear()
        await asyncio.gather(*(b.close() for b in backends), *self._closing, return_exceptions=True)

    # -- readiness -------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """``listener(state)`` after any endpoint's circuit changes state, or endpoints join."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _on_circuit(self, endpoint: str, state: CircuitState) -> None:
        if endpoint in self._ready:
            # Open: its models are gone with it. Closed again: ready only once a poll says so.
            self._ready[endpoint] = frozenset()
            ENDPOINT_READY.labels(endpoint).set(0)
        for listener in list(self._listeners):
            listener(state)

    def _wake(self) -> None:
        for listener in list(self._listeners):
            listener(CircuitState.CLOSED)

    async def refresh(self, models: Sequence[str], *, timeout_s: float) -> None:
        """Polls every endpoint for the readiness of each of ``models`` (no call to one whose circuit is open)."""
        endpoints = list(self.endpoints.items())

        async def poll(backend: TritonBackend) -> frozenset[str]:
            states = await asyncio.gather(*(backend.model_ready(m, timeout_s=timeout_s) for m in models))
            return frozenset(m for m, ok in zip(models, states, strict=True) if ok)

        results = await asyncio.gather(*(poll(b) for _, b in endpoints))
        for (endpoint, backend), ready in zip(endpoints, results, strict=True):
            if endpoint not in self.endpoints:
                continue  # left meanwhile
            if not backend.circuit_closed:  # it opened while we asked
                ready = frozenset()
            self._ready[endpoint] = ready
            ENDPOINT_READY.labels(endpoint).set(1 if ready.issuperset(models) else 0)

    def ready_endpoints(self, models: Iterable[str]) -> list[str]:
        """The endpoints whose circuit is closed and on which every one of ``models`` is ready."""
        wanted = set(models)
        return [
            endpoint
            for endpoint, backend in self.endpoints.items()
            if backend.circuit_closed and self._ready.get(endpoint, frozenset()).issuperset(wanted)
        ]

    def serving(self, models: Iterable[str]) -> bool:
        """Whether some endpoint serves every one of ``models`` now."""
        return bool(self.ready_endpoints(models))

    async def wait_models_ready(self, names: Sequence[str], *, timeout_s: float, poll_s: float = 0.25) -> None:
        """Waits until one endpoint has every model ready; BackendUnavailable names, per endpoint, what is missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        models = list(dict.fromkeys(names))
        while True:
            await self.refresh(models, timeout_s=min(2.0, timeout_s))
            if self.serving(models):
                return
            if loop.time() >= deadline:
                missing = "; ".join(f"{e}: {self._missing(e, models)}" for e in self.endpoints)
                raise errors.BackendUnavailable(
                    f"models not ready in Triton after {timeout_s:g} s "
                    f"({missing or f'no endpoint resolved from {self.triton_url}'})"
                )
            await asyncio.sleep(poll_s)

    def _missing(self, endpoint: str, models: Sequence[str]) -> str:
        if not self.endpoints[endpoint].circuit_closed:
            return "unreachable"
        ready = self._ready.get(endpoint, frozenset())
        return ", ".join(m for m in models if m not in ready) or "ready"

    # -- calls -----------------------------------------------------------------------

    def _choose(self, model: str, exclude: set[str]) -> TritonBackend | None:
        if len(self.endpoints) == 1:  # the common case: nothing to weigh
            ((endpoint, backend),) = self.endpoints.items()
            return backend if backend.circuit_closed and endpoint not in exclude else None
        now = time.monotonic()
        candidates = [
            (backend.cost(now), endpoint)
            for endpoint, backend in self.endpoints.items()
            if endpoint not in exclude and backend.circuit_closed and model in self._ready.get(endpoint, ())
        ]
        if not candidates:  # readiness unknown (not polled yet, or not ready anywhere): try what answers
            candidates = [
                (backend.cost(now), endpoint)
                for endpoint, backend in self.endpoints.items()
                if endpoint not in exclude and backend.circuit_closed
            ]
        if not candidates:
            return None
        least = min(cost for cost, _ in candidates)
        tied = [endpoint for cost, endpoint in candidates if cost == least]
        return self.endpoints[tied[next(self._turn) % len(tied)]]

    def _unavailable(self, model: str) -> errors.BackendUnavailable:
        if not self.endpoints:
            return errors.BackendUnavailable(f"backend unavailable for model {model!r}: no Triton endpoint")
        down = [e for e, b in self.endpoints.items() if not b.circuit_closed]
        if len(down) == 1 and len(self.endpoints) == 1:
            backend = self.endpoints[down[0]]
            return CircuitOpen(down[0], backend.breaker.retry_in())
        return errors.BackendUnavailable(
            f"backend unavailable for model {model!r}: every Triton endpoint is down ({', '.join(down)})"
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
    ) -> InferResult:
        """One inference on the best endpoint, failing over once to another (see the module docstring)."""
        if len(self.endpoints) == 1:  # the common case: nothing to choose, nowhere to fail over to
            (only,) = self.endpoints.values()
            if not only.circuit_closed:
                raise self._unavailable(model)
            # It retries on itself, as the loop below would let it (alone, first try).
            return await only.infer(
                model, version, inputs, outputs, timeout_s=timeout_s, request_id=request_id, idempotent=idempotent
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        tried: set[str] = set()
        while True:
            backend = self._choose(model, tried)
            if backend is None:
                raise self._unavailable(model)
            tried.add(backend.url)
            alone = not any(e not in tried and b.circuit_closed for e, b in self.endpoints.items())
            try:
                return await backend.infer(
                    model,
                    version,
                    inputs,
                    outputs,
                    timeout_s=deadline - loop.time(),
                    request_id=request_id,
                    idempotent=idempotent,
                    retry=alone and len(tried) == 1,
                )
            except errors.BackendUnavailable as exc:
                safe = idempotent or isinstance(exc, CircuitOpen)
                if (
                    len(tried) > 1
                    or alone
                    or not safe
                    or deadline - loop.time() < MIN_ATTEMPT_S
                    or not self.retry_budget.try_spend()
                ):
                    raise
                FAILOVERS.labels(backend.url).inc()
                log.info("call of model %s failed over from %s: %s", model, backend.url, exc.message)

    async def model_info(self, name: str, *, timeout_s: float) -> ModelInfo:
        """A model's metadata from an endpoint that has it ready (else any that answers)."""
        order = self.ready_endpoints([name]) + [e for e in self.endpoints if e not in self.ready_endpoints([name])]
        failure: errors.GatewayError | None = None
        for endpoint in order:
            try:
                return await self.endpoints[endpoint].model_info(name, timeout_s=timeout_s)
            except errors.BackendUnavailable as exc:
                failure = exc
        raise failure or self._unavailable(name)
