"""The shared cache: answers in Redis, seen by every gateway process that points at it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.proxy.cache.base import CACHE_ERRORS, Cache
from switchyard.proxy.checks import above, at_least

log = logging.getLogger(__name__)


class RedisCache(Cache):
    """A cache in Redis, shared by every proxy process that points at the same server.

    ``url`` is a redis-py URL (``redis://host:6379/0``, ``rediss://…``,
    ``unix://…``); keys are stored as ``key_prefix + key``. Values are written
    with ``SET … PX`` (``ttl_s`` is the default TTL; None: no expiry).

    Every call is bounded by ``min(op_timeout_s, timeout_s)`` where
    ``timeout_s`` is the caller's remaining deadline. Any failure or timeout is
    a miss (``get`` returns None, ``set`` does nothing), counted in
    ``switchyard_cache_errors_total`` and logged at most once per
    ``warn_interval_s``. After ``failure_threshold`` consecutive failures Redis
    is left alone for ``failure_backoff_s`` (every call is an immediate miss),
    so a dead or black-holed Redis costs requests nothing instead of
    ``op_timeout_s`` each. A call cut short by the caller's own deadline (shorter
    than ``op_timeout_s``) is a miss but not a Redis error.

    The client and its connection pool (up to ``max_connections``) are created
    here but connect lazily on first use, in the running loop; call
    :meth:`close` on shutdown. A command cancelled mid-flight (timeout, client
    gone) makes redis-py drop that connection, so its late reply can never
    answer another command.
    """

    def __init__(
        self,
        url: str,
        ttl_s: float | None = None,
        op_timeout_s: float = 0.05,
        *,
        key_prefix: str = "",
        name: str = "redis",
        max_connections: int = 64,
        failure_threshold: int = 3,
        failure_backoff_s: float = 1.0,
        warn_interval_s: float = 10.0,
    ) -> None:
        super().__init__(name, ttl_s)
        above("op_timeout_s", op_timeout_s, 0)
        at_least("max_connections", max_connections, 1)
        at_least("failure_threshold", failure_threshold, 1)
        at_least("failure_backoff_s", failure_backoff_s, 0)
        self.op_timeout_s = op_timeout_s
        """The longest one Redis command may take before it counts as a miss."""
        self.key_prefix = key_prefix
        self.failure_threshold = failure_threshold
        """Consecutive failures after which Redis is left alone for ``failure_backoff_s``."""
        self.failure_backoff_s = failure_backoff_s
        self.warn_interval_s = warn_interval_s
        # One immediate retry: a pooled connection may be stale after a Redis
        # restart, and reconnecting is cheap next to the op timeout.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=op_timeout_s,
            health_check_interval=0,
        )
        self._errors = CACHE_ERRORS.labels(name)
        self._failures = 0
        self._bypass_until = 0.0
        self._next_warning = 0.0
        self._unlogged = 0
        self._closed = False

    @property
    def client(self) -> aioredis.Redis:
        """The underlying redis-py client (for health checks and tests)."""
        return self._client

    async def ping(self, timeout_s: float | None = None) -> bool:
        """Whether Redis answers PING within the op timeout; never raises."""
        return await self._call("ping", self._client.ping(), timeout_s) is True

    async def _get(self, key: str, timeout_s: float | None) -> bytes | None:
        if self._bypassed():
            return None
        value = await self._call("get", self._client.get(self.key_prefix + key), timeout_s)
        return value if isinstance(value, bytes) else None

    async def _set(self, key: str, value: bytes, ttl_s: float | None, timeout_s: float | None) -> None:
        ttl = self._ttl(ttl_s)
        if (ttl is not None and ttl <= 0) or self._bypassed():
            return
        px = None if ttl is None else max(1, round(ttl * 1000))
        await self._call("set", self._client.set(self.key_prefix + key, value, px=px), timeout_s)

    async def _call(self, op: str, command: Awaitable[Any], timeout_s: float | None) -> Any:
        """Runs one command within the budget; returns its result, or None on any failure."""
        budget = self.op_timeout_s if timeout_s is None else min(self.op_timeout_s, timeout_s)
        if budget <= 0 or self._closed:
            if asyncio.iscoroutine(command):
                command.close()
            return None
        try:
            async with asyncio.timeout(budget):
                result = await command
        except TimeoutError as exc:
            if budget < self.op_timeout_s:
                return None  # the caller's deadline ran out, not Redis's fault
            self._failed(op, exc)
            return None
        except Exception as exc:  # any Redis trouble is a miss, never the caller's error
            self._failed(op, exc)
            return None
        self._failures = 0
        return result

    def _bypassed(self) -> bool:
        return self._failures >= self.failure_threshold and time.monotonic() < self._bypass_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self._errors.inc()
        self._failures += 1
        now = time.monotonic()
        if self._failures >= self.failure_threshold:
            self._bypass_until = now + self.failure_backoff_s
        self._unlogged += 1
        if now >= self._next_warning:
            log.warning(
                "cache %r: redis %s failed (%s); answering as a miss (%d failure(s) since the last warning, "
                "%d in a row%s)",
                self.name,
                op,
                repr(exc) if str(exc) else type(exc).__name__,
                self._unlogged,
                self._failures,
                f"; bypassing redis for {self.failure_backoff_s:g}s"
                if self._failures >= self.failure_threshold
                else "",
            )
            self._unlogged = 0
            self._next_warning = now + self.warn_interval_s

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
