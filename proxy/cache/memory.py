"""The in-process prediction or data cache: an LRU with a TTL and a byte bound."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from switchyard.proxy.cache.base import CACHE_BYTES, CACHE_EVICTIONS, Cache
from switchyard.proxy.checks import above_or_none, at_least

ENTRY_OVERHEAD = 64
"""Bytes charged per entry on top of len(key) + len(value), for the bookkeeping."""


class MemoryCache(Cache):
    """In-process LRU cache with a TTL, a byte bound and an optional entry bound.

    Each entry costs ``len(key) + len(value) + ENTRY_OVERHEAD`` bytes; least
    recently used entries are evicted to stay within ``max_bytes`` (and
    ``max_entries``), and a value that alone exceeds ``max_bytes`` is not
    stored. Expired entries are misses and are dropped when met. ``ttl_s`` is
    the default TTL (None: entries live until evicted); ``clock`` is injectable
    for tests.

    Not thread-safe, by design: it is used from the event loop thread only, and
    no method awaits anything, so no lock is needed.
    """

    def __init__(
        self,
        max_bytes: int,
        ttl_s: float | None = None,
        max_entries: int | None = None,
        *,
        name: str = "memory",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, ttl_s)
        at_least("max_bytes", max_bytes, 1)
        above_or_none("max_entries", max_entries, 0)
        self.max_bytes = max_bytes
        """Bytes charged (keys, values, overhead) past which the least recently used entries go."""
        self.max_entries = max_entries
        self._clock = clock
        # key -> (value, expires_at (monotonic), charged bytes); order = recency, oldest first.
        self._entries: OrderedDict[str, tuple[bytes, float, int]] = OrderedDict()
        self._bytes = 0
        self._bytes_gauge = CACHE_BYTES.labels(name)
        self._evictions = CACHE_EVICTIONS.labels(name)
        self._bytes_gauge.set(0)

    @property
    def size_bytes(self) -> int:
        """Bytes currently charged (keys, values and per-entry overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is stored (expired or not); does not touch recency."""
        return key in self._entries

    def get_nowait(self, key: str) -> bytes | None:
        """:meth:`get` without the await and without metrics."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at, size = entry
        if expires_at <= self._clock():
            del self._entries[key]
            self._charge(-size)
            return None
        self._entries.move_to_end(key)
        return value

    def set_nowait(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """:meth:`set` without the await."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._charge(-old[2])
        ttl = self._ttl(ttl_s)
        size = len(key) + len(value) + ENTRY_OVERHEAD
        if (ttl is not None and ttl <= 0) or size > self.max_bytes:
            return
        now = self._clock()
        self._entries[key] = (value, math.inf if ttl is None else now + ttl, size)
        self._bytes += size
        evicted = 0
        while self._bytes > self.max_bytes or (self.max_entries is not None and len(self._entries) > self.max_entries):
            _, (_, expires_at, old_size) = self._entries.popitem(last=False)
            self._bytes -= old_size
            if expires_at > now:  # dropping an expired entry is not an eviction
                evicted += 1
        if evicted:
            self._evictions.inc(evicted)
        self._bytes_gauge.set(self._bytes)

    def purge_expired(self) -> int:
        """Drops every expired entry (a full scan) and returns how many; optional housekeeping."""
        now = self._clock()
        expired = [k for k, (_, expires_at, _) in self._entries.items() if expires_at <= now]
        for k in expired:
            self._charge(-self._entries.pop(k)[2])
        return len(expired)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._bytes_gauge.set(0)

    def _charge(self, delta: int) -> None:
        self._bytes += delta
        self._bytes_gauge.set(self._bytes)

    async def _get(self, key: str, timeout_s: float | None) -> bytes | None:
        return self.get_nowait(key)

    async def _set(self, key: str, value: bytes, ttl_s: float | None, timeout_s: float | None) -> None:
        self.set_nowait(key, value, ttl_s)

    async def close(self) -> None:
        self.clear()
