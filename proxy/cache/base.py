"""The :class:`Cache` interface (async bytes, trouble is a miss) and the cache metrics.

Metrics (hits, misses, evictions, errors, bytes, coalesced calls) are defined
here rather than in ``proxy.metrics`` so the cache stays one self-contained idea.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from prometheus_client import Counter, Gauge

from switchyard.proxy.checks import above_or_none

CACHE_REQUESTS = Counter(
    "switchyard_cache_requests",
    "Cache look-ups, by cache, route and result (hit or miss).",
    ["cache", "route", "result"],
)
CACHE_EVICTIONS = Counter(
    "switchyard_cache_evictions", "Entries evicted to stay under a cache's size bound.", ["cache"]
)
CACHE_ERRORS = Counter(
    "switchyard_cache_errors", "Cache operations that failed or timed out (each answered as a miss).", ["cache"]
)
CACHE_BYTES = Gauge("switchyard_cache_bytes", "Bytes held by an in-process cache (keys, values, overhead).", ["cache"])
COALESCED = Counter(
    "switchyard_coalesced_requests",
    "Requests answered by joining an identical request already in flight, by route.",
    ["route"],
)


class Cache(ABC):
    """An async bytes cache. ``get`` and ``set`` never raise (cancellation aside): trouble is a miss.

    ``name`` labels the metrics (``switchyard_cache_*{cache=name}``); give each
    cache of a process its own name (``"prediction"``, ``"data"``).
    """

    def __init__(self, name: str, ttl_s: float | None = None) -> None:
        above_or_none("ttl_s", ttl_s, 0)
        self.name = name
        self.ttl_s = ttl_s
        """The default TTL; None: entries live until evicted."""
        self._lookups: dict[tuple[str, bool], Any] = {}

    def _ttl(self, ttl_s: float | None) -> float | None:
        """The TTL of one ``set``: ``ttl_s``, else the cache's default."""
        return self.ttl_s if ttl_s is None else ttl_s

    async def get(self, key: str, *, route: str = "", timeout_s: float | None = None) -> bytes | None:
        """The value under ``key``, or None on a miss; counted under ``route``.

        ``timeout_s`` is the caller's remaining deadline (``ctx.remaining()``):
        a remote cache never waits longer than that.
        """
        value = await self._get(key, timeout_s)
        hit = value is not None
        child = self._lookups.get((route, hit))
        if child is None:
            child = self._lookups[(route, hit)] = CACHE_REQUESTS.labels(self.name, route, "hit" if hit else "miss")
        child.inc()
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None, *, timeout_s: float | None = None) -> None:
        """Stores ``value`` under ``key`` for ``ttl_s`` seconds (None: the cache's default TTL).

        A TTL of zero or less stores nothing. Best effort: a failure is logged
        and counted, never raised.
        """
        await self._set(key, value, ttl_s, timeout_s)

    @abstractmethod
    async def _get(self, key: str, timeout_s: float | None) -> bytes | None: ...

    @abstractmethod
    async def _set(self, key: str, value: bytes, ttl_s: float | None, timeout_s: float | None) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Releases the cache's resources; the cache is not used afterwards."""
