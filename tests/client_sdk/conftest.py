"""Fixtures for the SDK tests: a scripted gateway on port 0, for asyncio and blocking clients.

Asyncio tests run on uvloop, as production does. The blocking client's tests
run the same grpc.aio server on a uvloop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
import uvloop

from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import server_options

from .scripted_gateway import ScriptedGateway


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop}


async def start_gateway() -> tuple[grpc.aio.Server, ScriptedGateway]:
    servicer = ScriptedGateway()
    server = grpc.aio.server(options=server_options())
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    servicer.target = f"127.0.0.1:{port}"
    return server, servicer


@pytest.fixture
async def gateway() -> AsyncIterator[ScriptedGateway]:
    """A scripted gateway on the test's own event loop."""
    server, servicer = await start_gateway()
    yield servicer
    await server.stop(None)


@pytest.fixture(scope="module")
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop running in a background thread, for servers the blocking client calls."""
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-gateway", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.fixture
def threaded_gateway(server_loop: asyncio.AbstractEventLoop) -> Iterator[ScriptedGateway]:
    """A scripted gateway served from the background loop."""
    server, servicer = asyncio.run_coroutine_threadsafe(start_gateway(), server_loop).result(timeout=10)
    yield servicer
    asyncio.run_coroutine_threadsafe(server.stop(None), server_loop).result(timeout=10)
