"""TritonBackend under backend faults, against a scripted in-process Triton on a real gRPC port.

What is checked: which UNAVAILABLE opens the circuit (the channel's, not
Triton's own), failing fast without a call while open, the probe closing it
when the server is back on the same port, one retry when safe, within the
deadline and the budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.proxy import errors
from switchyard.proxy.backend.breaker import CircuitBreaker, CircuitOpen, CircuitState
from switchyard.proxy.backend.retry import RetryBudget
from switchyard.proxy.backend.triton import Failure, TritonBackend, classify
from switchyard.server.processes import free_port
from switchyard.v1.tensors import from_numpy

INPUTS = [from_numpy("image", np.zeros((1, 64), np.float32))]


class ScriptedTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers ModelInfer with the next scripted status code (OK when the script is empty)."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode] = []
        self.infer_calls = 0

    async def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]
        self.infer_calls += 1
        code = self.script.pop(0) if self.script else grpc.StatusCode.OK
        if code is not grpc.StatusCode.OK:
            await context.abort(code, f"Request for model '{request.model_name}' failed: scripted {code.name}")
        reply = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        reply.outputs.add(name="label", datatype="INT64", shape=[1, 1])
        reply.raw_output_contents.append(np.zeros((1, 1), np.int64).tobytes())
        return reply

    async def ServerReady(self, request, context):  # type: ignore[no-untyped-def]
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):  # type: ignore[no-untyped-def]
        return service_pb2.ModelReadyResponse(ready=True)


class Server:
    """A ScriptedTriton that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.servicer = ScriptedTriton()
        self._server: grpc.aio.Server | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        assert server.add_insecure_port(self.url) == self.port
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _backend(server: Server, **kwargs) -> TritonBackend:  # type: ignore[no-untyped-def]
    kwargs.setdefault("breaker", CircuitBreaker(server.url, failure_threshold=3, cooldown_s=0.05, max_cooldown_s=0.1))
    return TritonBackend(server.url, max_message_bytes=4 * 1024 * 1024, **kwargs)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _infer(backend: TritonBackend, timeout_s: float = 2.0, **kwargs) -> None:  # type: ignore[no-untyped-def]
    await backend.infer("m", "", INPUTS, [], timeout_s=timeout_s, **kwargs)


async def test_triton_unavailable_is_retried_once_and_does_not_open_the_circuit(server: Server) -> None:
    backend = _backend(server)
    try:
        await _infer(backend)
        server.servicer.script = [grpc.StatusCode.UNAVAILABLE]
        await _infer(backend)  # the retry succeeds
        assert server.servicer.infer_calls == 3
        for _ in range(5):
            server.servicer.script = [grpc.StatusCode.UNAVAILABLE] * 2
            with pytest.raises(errors.BackendUnavailable) as info:
                await _infer(backend)
            assert "scripted UNAVAILABLE" in info.value.message
        assert server.servicer.infer_calls == 3 + 5 * 2, "one retry per call, not more"
        assert backend.circuit_closed, "Triton's own UNAVAILABLE says the connection works"
        server.servicer.script = [grpc.StatusCode.UNAVAILABLE]
        with pytest.raises(errors.BackendUnavailable):
            await _infer(backend, idempotent=False)  # it reached Triton: not retried
        server.servicer.script = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(errors.BackendError):
            await _infer(backend)
        assert server.servicer.infer_calls == 3 + 10 + 1 + 1, "only UNAVAILABLE is retried"
    finally:
        await backend.close()


async def test_dead_backend_opens_the_circuit_then_the_probe_closes_it(server: Server) -> None:
    backend = _backend(server)
    try:
        await _infer(backend)
        await server.stop()
        failures = 0
        while backend.circuit_closed:
            with pytest.raises(errors.BackendUnavailable) as info:
                await _infer(backend)
            assert not isinstance(info.value, CircuitOpen)
            failures += 1
        assert failures <= 3
        assert _sample("switchyard_backend_circuit_open", endpoint=server.url) == 1
        assert not await backend.model_ready("m", timeout_s=1)

        started = time.monotonic()
        with pytest.raises(CircuitOpen) as fast:
            await _infer(backend)
        assert time.monotonic() - started < 0.01
        assert fast.value.code is grpc.StatusCode.UNAVAILABLE
        assert fast.value.message.startswith(f"Triton at {server.url} is down; retrying ")

        await asyncio.sleep(0.3)  # several probes fail meanwhile
        assert not backend.circuit_closed
        calls = server.servicer.infer_calls
        await server.start()
        back = time.monotonic()
        while not backend.circuit_closed:
            assert time.monotonic() - back < 2.0, "the probe did not close the circuit"
            await asyncio.sleep(0.01)
        print(f"\ncircuit closed {time.monotonic() - back:.3f} s after the server came back")
        assert backend.breaker.state is CircuitState.CLOSED
        assert _sample("switchyard_backend_circuit_open", endpoint=server.url) == 0
        assert server.servicer.infer_calls == calls, "no inference was used as a probe"
        await _infer(backend)
        assert await backend.model_ready("m", timeout_s=1)
    finally:
        await backend.close()


async def test_not_sent_calls_are_retried_within_the_budget(server: Server) -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=0.0, max_tokens=1.0)
    breaker = CircuitBreaker(server.url, failure_threshold=100)
    backend = _backend(server, breaker=breaker, retry_budget=budget)
    try:
        await _infer(backend)
        await server.stop()
        sent = _sample("switchyard_backend_retries_total", endpoint=server.url)
        no_budget = _sample("switchyard_backend_retries_skipped_total", endpoint=server.url, reason="budget")
        for _ in range(3):
            with pytest.raises(errors.BackendUnavailable):
                await _infer(backend, idempotent=False)  # refused: never sent, so safe to retry anyway
        assert _sample("switchyard_backend_retries_total", endpoint=server.url) == sent + 1
        assert (
            _sample("switchyard_backend_retries_skipped_total", endpoint=server.url, reason="budget") == no_budget + 2
        )
        short = _sample("switchyard_backend_retries_skipped_total", endpoint=server.url, reason="deadline")
        budget.max_tokens = 5.0
        budget._tokens = 5.0
        with pytest.raises(errors.BackendUnavailable):
            await _infer(backend, timeout_s=0.02)  # too little time left for a retry
        assert _sample("switchyard_backend_retries_skipped_total", endpoint=server.url, reason="deadline") == short + 1
    finally:
        await backend.close()


def test_classify() -> None:
    class Error(grpc.aio.AioRpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    ready, down = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    reset = "Stream removed (recvmsg:Connection reset by peer)"
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert classify(Error(unavailable, refused), down) == Failure(connection=True, not_sent=True)
    assert classify(Error(unavailable, reset), grpc.ChannelConnectivity.IDLE) == Failure(True, False)
    assert classify(Error(unavailable, reset), ready) == Failure(True, False)
    assert classify(Error(unavailable, "Request for unknown model: 'm' is not ready"), ready) == Failure(False, False)
    assert classify(Error(unavailable, "whatever"), down) == Failure(True, False)
    assert classify(Error(grpc.StatusCode.INTERNAL, "Connection refused"), down) == Failure(False, False)
