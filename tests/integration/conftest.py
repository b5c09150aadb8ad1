"""Shared fixtures of the integration tests: one model repository, one local Triton and one gateway per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from switchyard.models import BUNDLED_ROUTES
from switchyard.models.build import build_repository
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options

from .gateway_thread import GatewayThread

TRITON_READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled models, built once per session."""
    return build_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(scope="session")
def local_triton(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A ready Triton serving ``model_repository`` on free loopback ports; tests must not stop it."""
    triton = LocalTriton(model_repository, work_dir=tmp_path_factory.mktemp("triton"))
    triton.start_sync()
    try:
        triton.wait_ready_sync(TRITON_READY_TIMEOUT_S)
        yield triton
    finally:
        triton.stop_sync()


@pytest.fixture(scope="session")
def gateway_thread(local_triton: LocalTriton) -> Iterator[GatewayThread]:
    """The gateway with the bundled default routes, in front of ``local_triton``, on a free loopback port."""
    settings = GatewaySettings(
        triton_url=local_triton.grpc_url,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        max_message_bytes=32 * 1024 * 1024,
        health_interval_s=0.5,
    )
    with GatewayThread(settings, load_routes(BUNDLED_ROUTES)) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def gateway_stub(gateway_thread: GatewayThread) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    """A plain generated stub on one channel to the gateway (what any-language clients use)."""
    with grpc.insecure_channel(gateway_thread.target, options=channel_options()) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)
