"""Runs a real Gateway on its own uvloop event loop in a background thread.

Tests talk to it over real gRPC on a loopback port, exactly as clients do,
while the test itself stays synchronous (or runs its own event loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from switchyard.proxy.gateway import Gateway
from switchyard.proxy.routes.schema import RoutesFile
from switchyard.proxy.settings import GatewaySettings

T = TypeVar("T")


class GatewayThread:
    def __init__(self, settings: GatewaySettings, routes: RoutesFile) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self._thread.start()
        self.gateway: Gateway = self.call(self._make(settings, routes))
        self.port: int = self.call(self.gateway.start())

    def __enter__(self) -> GatewayThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    async def _make(settings: GatewaySettings, routes: RoutesFile) -> Gateway:
        return Gateway(settings, routes)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace_s: float = 1.0) -> None:
        try:
            self.call(self.gateway.stop(grace_s))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
