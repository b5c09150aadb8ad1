"""Fixtures for the proxy's unit tests: a real redis-server, and asyncio tests on uvloop as production runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from tests.redis_server import redis_server  # noqa: F401  (fixture)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop}
