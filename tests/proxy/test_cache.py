"""proxy/cache/__init__.py: keys, the in-process LRU, the Redis cache against a real redis-server, and coalescing."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from switchyard.proxy.cache import (
    DATA_PREFIX,
    ENTRY_OVERHEAD,
    PREDICTION_PREFIX,
    Coalescer,
    MemoryCache,
    RedisCache,
    cache_key,
)
from switchyard.proxy.cache import redis_cache as redis_cache_mod
from switchyard.v1 import gateway_pb2 as pb
from tests.redis_server import RedisServer


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# Keys


def t(name: str, raw: bytes, shape: tuple[int, ...] = (), datatype: str = "UINT8") -> pb.Tensor:
    return pb.Tensor(name=name, datatype=datatype, shape=list(shape) or [len(raw)], raw_data=raw)


BASE_INPUTS = [t("a", b"\x01\x02\x03\x04\x05\x06", (2, 3)), t("b", b"xyz")]


def base_key(**changes: Any) -> str:
    args: dict[str, Any] = {"route": "digits", "fingerprint": "m:1", "inputs": BASE_INPUTS, "outputs": ["p", "q"]}
    args.update(changes)
    return cache_key(**args)


def test_key_is_prefixed_hex_of_xxh3_128_and_deterministic() -> None:
    key = base_key()
    assert key.startswith(PREDICTION_PREFIX)
    digest = key[len(PREDICTION_PREFIX) :]
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert base_key() == key
    assert cache_key("digits", "m:1", BASE_INPUTS, ["p", "q"], prefix=DATA_PREFIX) == DATA_PREFIX + digest


def test_key_ignores_the_order_of_inputs_and_outputs() -> None:
    assert base_key(inputs=list(reversed(BASE_INPUTS)), outputs=["q", "p"]) == base_key()


@pytest.mark.parametrize(
    "changes",
    [
        {"route": "digits2"},
        {"fingerprint": "m:2"},
        {"outputs": ["p"]},
        {"outputs": ["p", "r"]},
        {"outputs": []},
        {"inputs": [t("a", b"\x01\x02\x03\x04\x05\x07", (2, 3)), BASE_INPUTS[1]]},  # one byte
        {"inputs": [t("a", b"\x01\x02\x03\x04\x05\x06", (3, 2)), BASE_INPUTS[1]]},  # shape
        {"inputs": [t("a", b"\x01\x02\x03\x04\x05\x06", (6,)), BASE_INPUTS[1]]},  # rank
        {"inputs": [t("a", b"\x01\x02\x03\x04\x05\x06", (2, 3), "INT8"), BASE_INPUTS[1]]},  # datatype
        {"inputs": [t("c", b"\x01\x02\x03\x04\x05\x06", (2, 3)), BASE_INPUTS[1]]},  # name
        {"inputs": BASE_INPUTS[:1]},  # one input fewer
        {"inputs": [*BASE_INPUTS, t("c", b"")]},  # an empty extra input
    ],
    ids=repr,
)
def test_key_changes_with_every_field(changes: dict[str, Any]) -> None:
    assert base_key(**changes) != base_key()


def test_key_fields_are_length_prefixed() -> None:
    # Concatenations that would read the same without length prefixes.
    assert cache_key("ab", "c", [], []) != cache_key("a", "bc", [], [])
    assert cache_key("r", "", [], ["ab", "c"]) != cache_key("r", "", [], ["a", "bc"])
    assert cache_key("r", "", [t("a", b"bc", (2,))], []) != cache_key("r", "", [t("ab", b"c", (2,))], [])
    two = [t("a", b"x", (1,)), t("b", b"y", (1,))]
    assert cache_key("r", "", two, []) != cache_key("r", "", [t("a", b"x", (1,))], ["b"])


# ---------------------------------------------------------------------------
# MemoryCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry_bytes(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


async def test_memory_round_trip_counts_hits_and_misses_by_route() -> None:
    name = unique("mem")
    c = MemoryCache(1 << 20, ttl_s=60, name=name)
    assert await c.get("k", route="r1") is None
    await c.set("k", b"v")
    assert await c.get("k", route="r1") == b"v"
    assert await c.get("k", route="r1") == b"v"
    assert sample("switchyard_cache_requests_total", cache=name, route="r1", result="hit") == 2
    assert sample("switchyard_cache_requests_total", cache=name, route="r1", result="miss") == 1
    await c.close()
    assert len(c) == 0


async def test_memory_evicts_least_recently_used_first() -> None:
    name = unique("mem")
    c = MemoryCache(1 << 20, max_entries=3, name=name)
    for k in "abc":
        await c.set(k, k.encode())
    assert await c.get("a") == b"a"  # a is now the most recent; b the least
    await c.set("d", b"d")
    assert "b" not in c and [k in c for k in "acd"] == [True, True, True]
    await c.set("e", b"e")
    assert "c" not in c
    assert sample("switchyard_cache_evictions_total", cache=name) == 2


async def test_memory_ttl_expiry_drops_the_entry() -> None:
    clock = FakeClock()
    name = unique("mem")
    c = MemoryCache(1 << 20, ttl_s=10, name=name, clock=clock)
    await c.set("default", b"1")
    await c.set("short", b"2", ttl_s=1)
    await c.set("zero", b"3", ttl_s=0)  # stores nothing
    assert "zero" not in c
    clock.now += 1
    assert await c.get("short") is None
    assert "short" not in c
    assert await c.get("default") == b"1"
    clock.now += 9
    assert await c.get("default") is None
    assert len(c) == 0 and c.size_bytes == 0
    assert sample("switchyard_cache_bytes", cache=name) == 0
    assert sample("switchyard_cache_evictions_total", cache=name) == 0  # expiry is not eviction


async def test_memory_without_ttl_keeps_entries_until_evicted() -> None:
    clock = FakeClock()
    c = MemoryCache(1 << 20, clock=clock)
    await c.set("k", b"v")
    clock.now += 1e9
    assert await c.get("k") == b"v"


async def test_memory_purge_expired() -> None:
    clock = FakeClock()
    c = MemoryCache(1 << 20, ttl_s=5, clock=clock)
    await c.set("a", b"1")
    await c.set("b", b"2", ttl_s=50)
    clock.now += 5
    assert c.purge_expired() == 1
    assert "a" not in c and "b" in c and c.size_bytes == entry_bytes("b", b"2")


async def test_memory_byte_bound_evicts_and_counts() -> None:
    name = unique("mem")
    value = b"x" * 1000
    one = entry_bytes("k0", value)
    c = MemoryCache(2 * one + 10, name=name)
    for i in range(5):
        await c.set(f"k{i}", value)
        assert c.size_bytes <= c.max_bytes
        assert sample("switchyard_cache_bytes", cache=name) == c.size_bytes
    assert len(c) == 2 and "k3" in c and "k4" in c
    assert c.size_bytes == 2 * one
    assert sample("switchyard_cache_evictions_total", cache=name) == 3


async def test_memory_does_not_store_a_value_larger_than_the_bound() -> None:
    name = unique("mem")
    c = MemoryCache(1000, name=name)
    await c.set("small", b"s")
    await c.set("big", b"x" * 1000)
    assert "big" not in c and "small" in c
    assert sample("switchyard_cache_evictions_total", cache=name) == 0
    # A too-large new value for a stored key removes the old one (it is stale).
    await c.set("small", b"x" * 1000)
    assert "small" not in c and c.size_bytes == 0


async def test_memory_overwrite_recharges_bytes() -> None:
    c = MemoryCache(1 << 20)
    await c.set("k", b"x" * 100)
    await c.set("k", b"y" * 10)
    assert len(c) == 1 and c.size_bytes == entry_bytes("k", b"y" * 10)
    assert await c.get("k") == b"y" * 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "max_bytes must be >= 1, got 0"),
        ({"max_bytes": 10, "ttl_s": 0}, "ttl_s must be > 0 or None, got 0"),
        ({"max_bytes": 10, "max_entries": 0}, "max_entries must be > 0 or None, got 0"),
    ],
)
def test_memory_rejects_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        MemoryCache(**kwargs)
    assert str(info.value) == message


# ---------------------------------------------------------------------------
# RedisCache against a real redis-server


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_redis_cache(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisCache]]:
    made: list[RedisCache] = []

    def make(**kwargs: Any) -> RedisCache:
        kwargs.setdefault("name", unique("redis"))
        kwargs.setdefault("op_timeout_s", 1.0)  # generous: round trips must not flake on a busy machine
        c = RedisCache(redis_server.url, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def test_redis_round_trip(make_redis_cache: Callable[..., RedisCache], raw_redis: aioredis.Redis) -> None:
    c = make_redis_cache(ttl_s=60, key_prefix="test:")
    assert await c.ping()
    assert await c.get("k", route="r") is None
    await c.set("k", b"\x00value\xff")
    assert await c.get("k", route="r") == b"\x00value\xff"
    assert await raw_redis.get("test:k") == b"\x00value\xff"
    assert 0 < await raw_redis.pttl("test:k") <= 60_000
    assert sample("switchyard_cache_requests_total", cache=c.name, route="r", result="hit") == 1
    assert sample("switchyard_cache_requests_total", cache=c.name, route="r", result="miss") == 1
    assert sample("switchyard_cache_errors_total", cache=c.name) == 0


async def test_redis_ttl(make_redis_cache: Callable[..., RedisCache], raw_redis: aioredis.Redis) -> None:
    c = make_redis_cache(ttl_s=60)
    await c.set("short", b"v", ttl_s=0.1)
    assert 0 < await raw_redis.pttl("short") <= 100
    await c.set("forever", b"v", ttl_s=None)
    assert 0 < await raw_redis.pttl("forever") <= 60_000  # None: the cache's default TTL
    await c.set("zero", b"v", ttl_s=0)
    assert await raw_redis.exists("zero") == 0
    no_default = make_redis_cache()
    await no_default.set("persistent", b"v")
    assert await raw_redis.pttl("persistent") == -1
    await asyncio.sleep(0.25)
    assert await c.get("short") is None
    assert await c.get("forever") == b"v"


async def test_two_clients_share_hits(make_redis_cache: Callable[..., RedisCache]) -> None:
    # Two caches with their own pools, as two proxy processes would have.
    first, second = make_redis_cache(ttl_s=60), make_redis_cache(ttl_s=60)
    assert first.client.connection_pool is not second.client.connection_pool
    key = cache_key("digits", "m:1", BASE_INPUTS, ["p"])
    response = pb.InferResponse(route="digits", outputs=[t("p", b"\x01")]).SerializeToString()
    assert await second.get(key) is None
    await first.set(key, response)
    assert pb.InferResponse.FromString(await second.get(key) or b"").outputs[0].raw_data == b"\x01"
    assert sample("switchyard_cache_requests_total", cache=second.name, route="", result="hit") == 1


async def test_redis_down_is_a_miss_within_the_op_timeout(
    redis_server: RedisServer, make_redis_cache: Callable[..., RedisCache]
) -> None:
    c = make_redis_cache(ttl_s=60, op_timeout_s=0.05, failure_backoff_s=0.0)
    await c.set("k", b"v")
    assert await c.get("k") == b"v"
    redis_server.stop()
    for _ in range(3):
        started = time.monotonic()
        assert await c.get("k") is None
        await c.set("k2", b"v")
        assert time.monotonic() - started < 2 * 0.05 + 0.1
    assert not await c.ping()
    assert sample("switchyard_cache_errors_total", cache=c.name) == 7
    assert sample("switchyard_cache_requests_total", cache=c.name, route="", result="miss") == 3
    # It comes back on its own once Redis does (a fresh, empty server on the same port).
    redis_server.start()
    await c.set("k", b"again")
    assert await c.get("k") == b"again"


async def test_redis_failures_are_logged_at_a_limited_rate(
    redis_server: RedisServer, make_redis_cache: Callable[..., RedisCache], caplog: pytest.LogCaptureFixture
) -> None:
    c = make_redis_cache(op_timeout_s=0.05, failure_backoff_s=0.0)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger=redis_cache_mod.__name__):
        for _ in range(20):
            assert await c.get("k") is None
    warnings = [r for r in caplog.records if r.name == redis_cache_mod.__name__]
    assert len(warnings) == 1
    assert "answering as a miss" in warnings[0].getMessage()
    assert sample("switchyard_cache_errors_total", cache=c.name) == 20


async def test_redis_is_bypassed_after_repeated_failures(
    redis_server: RedisServer, make_redis_cache: Callable[..., RedisCache]
) -> None:
    c = make_redis_cache(op_timeout_s=0.05, failure_threshold=2, failure_backoff_s=0.3)
    redis_server.stop()
    assert await c.get("k") is None
    assert await c.get("k") is None
    assert sample("switchyard_cache_errors_total", cache=c.name) == 2
    redis_server.start()
    await c.set("k", b"v")  # skipped: still bypassed
    assert await c.get("k") is None
    assert sample("switchyard_cache_errors_total", cache=c.name) == 2
    await asyncio.sleep(0.35)
    await c.set("k", b"v")
    assert await c.get("k") == b"v"


async def test_slow_redis_times_out_and_the_late_reply_never_answers_another_command(
    make_redis_cache: Callable[..., RedisCache], raw_redis: aioredis.Redis
) -> None:
    # One connection in the pool, so a reply left over from a timed-out command
    # would be read by the next one (redis-py CVE-2023-28858/28859).
    c = make_redis_cache(op_timeout_s=0.05, max_connections=1, failure_backoff_s=0.0)
    await c.set("a", b"value-a")
    await c.set("b", b"value-b")
    await raw_redis.client_pause(400, all=True)
    started = time.monotonic()
    assert await c.get("a") is None
    assert time.monotonic() - started < 0.05 + 0.1
    assert sample("switchyard_cache_errors_total", cache=c.name) == 1
    await asyncio.sleep(0.5)  # the pause ends; GET a is answered on the dropped connection, if at all
    assert await c.get("b") == b"value-b"
    assert await c.get("a") == b"value-a"


async def test_caller_deadline_bounds_the_call_without_counting_an_error(
    make_redis_cache: Callable[..., RedisCache], raw_redis: aioredis.Redis
) -> None:
    c = make_redis_cache(op_timeout_s=1.0)
    await c.set("k", b"v")
    assert await c.get("k", timeout_s=0) is None  # no time left: not even tried
    await raw_redis.client_pause(300, all=True)
    started = time.monotonic()
    assert await c.get("k", timeout_s=0.05) is None
    assert time.monotonic() - started < 0.05 + 0.1
    assert sample("switchyard_cache_errors_total", cache=c.name) == 0
    await asyncio.sleep(0.3)
    assert await c.get("k", timeout_s=1.0) == b"v"


async def test_redis_cancellation_reaches_the_caller(
    make_redis_cache: Callable[..., RedisCache], raw_redis: aioredis.Redis
) -> None:
    c = make_redis_cache(op_timeout_s=1.0)
    await c.set("k", b"v")
    await raw_redis.client_pause(300, all=True)
    task = asyncio.create_task(c.get("k"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sample("switchyard_cache_errors_total", cache=c.name) == 0
    await asyncio.sleep(0.3)
    assert await c.get("k") == b"v"


async def test_redis_closed_cache_is_a_miss(make_redis_cache: Callable[..., RedisCache]) -> None:
    c = make_redis_cache()
    await c.set("k", b"v")
    await c.close()
    await c.close()
    assert await c.get("k") is None


async def test_unreachable_redis_at_start_is_a_miss() -> None:
    from tests.redis_server import free_port

    c = RedisCache(f"redis://127.0.0.1:{free_port()}/0", op_timeout_s=0.05, name=unique("redis"))
    try:
        assert await c.get("k") is None
        await c.set("k", b"v")
        assert sample("switchyard_cache_errors_total", cache=c.name) == 2
    finally:
        await c.close()


# ---------------------------------------------------------------------------
# Coalescer


class Backend:
    """A factory that counts calls and waits until released."""

    def __init__(self, result: object = "answer", error: Exception | None = None) -> None:
        self.calls = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> object:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.result


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_identical_calls_run_the_factory_once() -> None:
    co, backend = Coalescer(), Backend()
    route = unique("route")
    calls = [asyncio.create_task(co.run("k", backend, route=route)) for _ in range(20)]
    await settle()
    assert len(co) == 1
    backend.release.set()
    results = await asyncio.gather(*calls)
    assert backend.calls == 1
    assert [r for r, _ in results] == ["answer"] * 20
    assert sum(joined for _, joined in results) == 19
    assert results[0][1] is False
    assert sample("switchyard_coalesced_requests_total", route=route) == 19
    await settle()
    assert len(co) == 0 and not co.tasks


async def test_different_keys_do_not_share_a_flight() -> None:
    co, a, b = Coalescer(), Backend("a"), Backend("b")
    a.release.set()
    b.release.set()
    assert list(await asyncio.gather(co.run("a", a), co.run("b", b))) == [("a", False), ("b", False)]
    assert a.calls == b.calls == 1


async def test_exception_reaches_every_waiter(caplog: pytest.LogCaptureFixture) -> None:
    co, backend = Coalescer(), Backend(error=ValueError("backend said no"))
    calls = [asyncio.create_task(co.run("k", backend)) for _ in range(20)]
    await settle()
    backend.release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert backend.calls == 1
    assert all(isinstance(r, ValueError) and str(r) == "backend said no" for r in results)
    await settle()
    assert len(co) == 0 and not co.tasks
    assert not caplog.records


async def test_cancelling_one_waiter_leaves_the_others() -> None:
    co, backend = Coalescer(), Backend()
    calls = [asyncio.create_task(co.run("k", backend)) for _ in range(3)]
    await settle()
    calls[0].cancel()  # the caller that started the flight goes away
    await settle()
    assert calls[0].cancelled()
    assert backend.cancelled == 0 and len(co) == 1
    backend.release.set()
    assert list(await asyncio.gather(*calls[1:])) == [("answer", True), ("answer", True)]
    assert backend.calls == 1 and backend.cancelled == 0


async def test_cancelling_every_waiter_cancels_the_factory() -> None:
    co, backend = Coalescer(), Backend()
    calls = [asyncio.create_task(co.run("k", backend)) for _ in range(3)]
    await settle()
    (task,) = co.tasks
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    assert len(co) == 0  # a new caller must not join the dying flight
    await settle()
    assert task.cancelled() and backend.cancelled == 1
    assert not co.tasks


async def test_a_call_after_every_waiter_left_starts_a_new_flight() -> None:
    co, backend = Coalescer(), Backend()
    first = asyncio.create_task(co.run("k", backend))
    await settle()
    first.cancel()
    second = asyncio.create_task(co.run("k", backend))
    await settle()
    backend.release.set()
    assert await second == ("answer", False)
    assert backend.calls == 2 and backend.cancelled == 1


async def test_a_call_after_completion_starts_a_new_flight() -> None:
    co, backend = Coalescer(), Backend()
    backend.release.set()
    assert await co.run("k", backend) == ("answer", False)
    assert await co.run("k", backend) == ("answer", False)
    assert backend.calls == 2
    assert len(co) == 0


async def test_waiter_timeout_leaves_the_flight_running_for_others() -> None:
    co, backend = Coalescer(), Backend()
    patient = asyncio.create_task(co.run("k", backend))
    await settle()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await co.run("k", backend)
    backend.release.set()
    assert await patient == ("answer", False)


async def test_close_cancels_flights() -> None:
    co, backend = Coalescer(), Backend()
    call = asyncio.create_task(co.run("k", backend))
    await settle()
    await co.close()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert backend.cancelled == 1 and len(co) == 0 and not co.tasks
