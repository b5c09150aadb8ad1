"""The SDK's calls on shared InferStreams against a real Triton: unary answers, deadlines and cancellation.

``digits_slow`` (the job tests' route) holds a lone request about a second in
its micro-batching window (no eager dispatch) before its real Triton call:
long enough to pass a shorter deadline or to be cancelled while the gateway
still works on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from switchyard.client import AsyncClient, DeadlineExceeded, InvalidArgument
from switchyard.models.datasets import digits_split
from switchyard.proxy.routes.schema import parse_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread
from .jobs_fixtures import ROUTES
from .waiting import wait_for

IMAGE = np.zeros((1, 64), np.float32)


@pytest.fixture(scope="module")
def gateway(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    settings = GatewaySettings(triton_url=local_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None)
    with GatewayThread(settings, parse_routes(ROUTES)) as thread:
        yield thread


def _gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_concurrent_stream_calls_answer_as_unary_ones(gateway: GatewayThread) -> None:
    _, x_test, _, y_test = digits_split()
    images = x_test[:64]

    async def run() -> tuple[list[int], list[int], int]:
        async with AsyncClient(gateway.target) as unary, AsyncClient(gateway.target, stream_calls=True) as streamed:
            plain = await asyncio.gather(*(unary.infer("digits", {"image": row[None]}) for row in images))
            shared = await asyncio.gather(*(streamed.infer("digits", {"image": row[None]}) for row in images))
            assert streamed._shared is not None
            return (
                [int(np.asarray(r["label"]).reshape(-1)[0]) for r in plain],
                [int(np.asarray(r["label"]).reshape(-1)[0]) for r in shared],
                streamed._shared.pending,
            )

    plain, shared, pending = asyncio.run(run())
    assert shared == plain
    assert np.mean(np.asarray(shared) == y_test[:64]) >= 0.9
    assert pending == 0


def test_a_stream_call_past_its_deadline_raises_at_the_deadline_and_the_stream_goes_on(gateway: GatewayThread) -> None:
    async def run() -> tuple[float, int, int]:
        async with AsyncClient(gateway.target, stream_calls=True) as client:
            await client.infer("digits", {"image": IMAGE})  # the stream is open
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as info:
                await client.infer("digits_slow", {"image": IMAGE}, timeout=0.4, request_id="late")
            took = time.monotonic() - started
            assert info.value.request_id == "late"
            after = await client.infer("digits", {"image": IMAGE}, timeout=5)
            assert client._shared is not None
            return took, int(np.asarray(after["label"]).reshape(-1)[0]), client._shared.pending

    took, _, pending = asyncio.run(run())
    assert 0.3 <= took <= 0.5, f"DEADLINE_EXCEEDED after {took:.3f} s for a 0.4 s deadline"
    assert pending == 0
    wait_for(lambda: _gauge("switchyard_inflight_requests", route="digits_slow") == 0, 2, "no request left in flight")


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Polls ``predicate`` without blocking the client's loop; AssertionError past ``timeout_s``."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"{what}: not within {timeout_s} s"


def test_a_cancelled_stream_call_leaves_nothing_pending_on_either_side(gateway: GatewayThread) -> None:
    def count(code: str) -> float:
        return _gauge("switchyard_requests_total", route="digits_slow", code=code)

    def in_flight() -> float:
        return _gauge("switchyard_inflight_requests", route="digits_slow")

    cancelled_before, ok_before = count("CANCELLED"), count("OK")

    async def run() -> None:
        async with AsyncClient(gateway.target, stream_calls=True) as client:
            call = asyncio.ensure_future(client.infer("digits_slow", {"image": IMAGE}, timeout=10))
            # Cancelled once the gateway holds it (in the batching window, before any Triton call).
            await _until(lambda: in_flight() == 1, 5, "the request reached the gateway")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert client._shared is not None and client._shared.pending == 0
            # With the stream still open: the gateway withdrew it, so it ends CANCELLED there; left running it
            # would have ended OK after its window.
            await _until(lambda: count("CANCELLED") == cancelled_before + 1, 5, "the gateway withdrew the request")
            assert in_flight() == 0
            assert count("OK") == ok_before

    asyncio.run(run())


def test_the_contract_own_timeout_and_cancel_on_a_raw_stream(gateway: GatewayThread) -> None:
    """Any client: timeout_ms ends one request in-band, cancel withdraws one unanswered, and Infer refuses cancel."""
    image = from_numpy("image", IMAGE)
    with grpc.insecure_channel(gateway.target, options=channel_options()) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        def requests() -> Iterator[pb.InferRequest]:
            yield pb.InferRequest(route="digits_slow", request_id="withdrawn", inputs=[image])
            yield pb.InferRequest(route="digits_slow", request_id="late", inputs=[image], timeout_ms=200)
            yield pb.InferRequest(request_id="withdrawn", cancel=True)
            yield pb.InferRequest(request_id="unknown", cancel=True)  # nothing to withdraw: a no-op
            yield pb.InferRequest(route="digits", request_id="fast", inputs=[image])

        answers = {m.request_id: m for m in stub.InferStream(requests(), timeout=10)}
        assert set(answers) == {"late", "fast"}
        assert answers["late"].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        assert answers["fast"].WhichOneof("result") == "response"

        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(pb.InferRequest(route="digits", inputs=[image], cancel=True), timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("cancel:")


def test_a_stream_call_error_is_the_unary_one(gateway: GatewayThread) -> None:
    async def run() -> None:
        async with AsyncClient(gateway.target, stream_calls=True) as client:
            with pytest.raises(InvalidArgument) as info:
                await client.infer("digits", {"pixels": IMAGE}, request_id="bad")
            assert info.value.request_id == "bad"
            assert "inputs" in info.value.message

    asyncio.run(run())
