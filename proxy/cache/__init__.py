"""Prediction cache, data cache and request coalescing: the library the routes call.

Owns three things: :func:`cache_key` (a fast, collision-safe key over a route's
identity and a request's tensors), the :class:`Cache` interface with two
backends — :class:`MemoryCache` (in-process LRU with TTL and a byte bound, the
default) and :class:`RedisCache` (shared by every proxy process pointing at the
same Redis) — and :class:`Coalescer` (single flight: identical requests in
flight at the same time are computed once). Values are opaque bytes: a route
stores a serialized ``InferResponse`` (prediction cache) or serialized
pre-processed tensors (data cache). This module does not decide *what* is
cached, for how long, or when a request bypasses the cache: that is the
route's policy. A cache never fails a request: any backend trouble is a miss.
Metrics (hits, misses, evictions, errors, bytes, coalesced calls) are defined
here rather than in ``proxy.metrics`` so the cache stays one self-contained idea.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
import xxhash
from prometheus_client import Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.v1 import gateway_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

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

# ---------------------------------------------------------------------------
# Keys

PREDICTION_PREFIX = "sy:p:"
"""Prefix of prediction-cache keys (whole responses)."""
DATA_PREFIX = "sy:d:"
"""Prefix of data-cache keys (pre-processed inputs)."""

# Bumped whenever the hashed layout changes, so old entries in a shared Redis
# can never be read back under the new layout.
_KEY_SCHEME = b"switchyard/cache-key/1\x00"
_U64 = struct.Struct("<Q")


def _put(h: Any, data: bytes) -> None:
    # Every variable-length field is length-prefixed, so ("ab", "c") and
    # ("a", "bc") hash differently.
    h.update(_U64.pack(len(data)))
    h.update(data)


def cache_key(
    route: str,
    fingerprint: str,
    inputs: Sequence[pb.Tensor],
    outputs: Sequence[str] = (),
    *,
    prefix: str = PREDICTION_PREFIX,
) -> str:
    """The cache key of one request: ``prefix`` + 32 hex digits of xxh3-128.

    Hashes the route name, the route's ``fingerprint`` (resolved model versions
    and op parameters, computed by the route), each input's name, datatype,
    shape and raw bytes, and the wanted output names. Inputs are taken in name
    order and outputs sorted, so the order a client sends them in does not
    matter. xxh3 is not cryptographic: the key identifies requests, it does not
    authenticate them.
    """
    h = xxhash.xxh3_128(_KEY_SCHEME)
    _put(h, route.encode())
    _put(h, fingerprint.encode())
    tensors = sorted(inputs, key=lambda t: t.name)
    h.update(_U64.pack(len(tensors)))
    for t in tensors:
        _put(h, t.name.encode())
        _put(h, t.datatype.encode())
        shape = list(t.shape)
        h.update(_U64.pack(len(shape)))
        h.update(struct.pack(f"<{len(shape)}q", *shape))
        _put(h, t.raw_data)
    names = sorted(outputs)
    h.update(_U64.pack(len(names)))
    for name in names:
        _put(h, name.encode())
    return prefix + h.hexdigest()


# ---------------------------------------------------------------------------
# The interface


class Cache(ABC):
    """An async bytes cache. ``get`` and ``set`` never raise (cancellation aside): trouble is a miss.

    ``name`` labels the metrics (``switchyard_cache_*{cache=name}``); give each
    cache of a process its own name (``"prediction"``, ``"data"``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lookups: dict[tuple[str, bool], Any] = {}

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


# ---------------------------------------------------------------------------
# In-process LRU

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
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be an integer >= 1 or None, got {max_entries!r}")
        super().__init__(name)
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
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
        ttl = self.ttl_s if ttl_s is None else ttl_s
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


# ---------------------------------------------------------------------------
# Redis


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
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        if not op_timeout_s > 0:
            raise ValueError(f"op_timeout_s must be > 0, got {op_timeout_s!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an integer >= 1, got {failure_threshold!r}")
        if failure_backoff_s < 0:
            raise ValueError(f"failure_backoff_s must be >= 0, got {failure_backoff_s!r}")
        super().__init__(name)
        self.ttl_s = ttl_s
        self.op_timeout_s = op_timeout_s
        self.key_prefix = key_prefix
        self.failure_threshold = failure_threshold
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
        ttl = self.ttl_s if ttl_s is None else ttl_s
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


# ---------------------------------------------------------------------------
# Request coalescing


@dataclass(eq=False)
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = field(default=0)


async def _await(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


class Coalescer:
    """Single flight: identical requests in flight at the same time are computed once.

    ``await run(key, factory)`` starts ``factory()`` in its own task, or joins
    the task already running under ``key``; every caller gets its result (or
    its exception) and whether it joined. A caller that is cancelled (client
    gone) leaves the others waiting; the task is cancelled only when every
    caller has gone. The entry is removed as soon as the task ends, so a
    request arriving later starts a new flight: results are never reused after
    the fact (that is the cache's job). Event loop thread only.

    Every caller receives the *same* object (and, on failure, the same
    exception instance): a caller that personalises the answer (its own
    ``request_id``) must copy it first, or have the factory return bytes.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """Flights in progress."""
        return len(self._flights)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """Tasks not yet finished, including cancelled flights still unwinding."""
        return frozenset(self._tasks)

    async def run(self, key: str, factory: Callable[[], Awaitable[T]], *, route: str = "") -> tuple[T, bool]:
        """``factory()``'s result for ``key`` and whether this call joined a flight already running.

        ``route`` labels ``switchyard_coalesced_requests_total`` for joined calls.
        """
        flight = self._flights.get(key)
        if flight is not None and flight.task.done():
            flight = None  # ended, its done callback not run yet: never hand out a finished result
        joined = flight is not None
        if flight is None:
            task = asyncio.get_running_loop().create_task(_await(factory), name=f"coalesced:{key}")
            flight = _Flight(task)
            self._flights[key] = flight
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._finished(key, flight, t))
        else:
            COALESCED.labels(route).inc()
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every caller has gone: nobody wants the answer any more.
                self._forget(key, flight)
                flight.task.cancel()

    def _forget(self, key: str, flight: _Flight[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _finished(self, key: str, flight: _Flight[Any], task: asyncio.Task[Any]) -> None:
        self._forget(key, flight)
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a flight every caller left must not log "never retrieved"

    async def close(self) -> None:
        """Cancels every flight and waits for the tasks to end (shutdown)."""
        tasks = list(self._tasks)
        self._flights.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
