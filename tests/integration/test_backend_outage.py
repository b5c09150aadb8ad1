"""Triton dies under a running gateway: fast UNAVAILABLE, NOT_SERVING, then recovery without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread
from .waiting import wait_for

REQUEST = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))])


@pytest.fixture
def own_triton(model_repository: Path, tmp_path: Path) -> Iterator[LocalTriton]:
    """A Triton of this test's own, since the test kills it."""
    triton = LocalTriton(model_repository, work_dir=tmp_path)
    triton.start_sync()
    try:
        triton.wait_ready_sync(120)
        yield triton
    finally:
        triton.stop_sync()


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_triton_killed_then_back(own_triton: LocalTriton) -> None:
    settings = GatewaySettings(
        triton_url=own_triton.grpc_url, host="127.0.0.1", port=0, metrics_port=None, health_interval_s=0.2
    )
    gateway = GatewayThread(settings, load_routes(BUNDLED_ROUTES))
    channel = grpc.insecure_channel(gateway.target)
    stub = gateway_pb2_grpc.GatewayStub(channel)
    try:
        assert stub.Infer(REQUEST, timeout=10).outputs
        assert _health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        assert _health(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING

        own_triton.kill()
        deadline = 2.0
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.Infer(REQUEST, timeout=deadline)
            elapsed = time.monotonic() - started
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert elapsed < deadline, f"UNAVAILABLE took {elapsed:.2f} s, the deadline was {deadline} s"
        wait_for(lambda: _health(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING, 5)
        assert _health(channel, "route/digits") == health_pb2.HealthCheckResponse.NOT_SERVING
        # Not ready, but alive: restarting the gateway would not bring Triton back.
        assert _health(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING

        own_triton.start_sync()
        own_triton.wait_ready_sync(120)

        def succeeds() -> bool:
            try:
                return bool(stub.Infer(REQUEST, timeout=2).outputs)
            except grpc.RpcError:
                return False

        recovery = wait_for(succeeds, 20)
        print(f"\nfirst success {recovery:.2f} s after Triton was ready again")
        wait_for(lambda: _health(channel, "route/digits") == health_pb2.HealthCheckResponse.SERVING, 5)
    finally:
        channel.close()
        gateway.stop()
