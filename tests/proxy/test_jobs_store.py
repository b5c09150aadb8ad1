"""Both job stores (embedded SQLite, real Redis) against one set of semantics: leases, CAS completion, cancel, TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from switchyard.proxy.jobs import JobRecord, JobState, JobStore, QueueFull, RedisJobStore, SqliteJobStore
from switchyard.proxy.jobs.records import StoreUnavailable, new_job_id
from tests.redis_server import RedisServer

StoreFactory = Callable[[str], JobStore]


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores on one backing store; each call is another process's view (its own worker name)."""
    opened: list[JobStore] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")

        def make(worker: str) -> JobStore:
            opened.append(RedisJobStore(server.url, consumer=worker, op_timeout_s=1.0))
            return opened[-1]
    else:

        def make(worker: str) -> JobStore:
            opened.append(SqliteJobStore(tmp_path / "jobs.db", op_timeout_s=1.0))
            return opened[-1]

    yield make
    for store in opened:
        await store.close()


def job(owner: str = "alice", *, key: str = "", ttl_s: float = 60.0, max_attempts: int = 3) -> JobRecord:
    return JobRecord(
        job_id=new_job_id(),
        owner=owner,
        route="digits",
        request_id="r1",
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        create_time=time.time(),
        result_ttl_s=ttl_s,
        idempotency_key=key,
        request=b"\x0a\x06digits",
    )


async def test_submit_get_and_idempotency_key(make_store: StoreFactory) -> None:
    store = make_store("w1")
    first, duplicate = await store.submit(job(key="k1"), max_queued=10)
    assert not duplicate
    stored = await store.get(first.job_id)
    assert stored is not None
    assert (stored.state, stored.attempts, stored.request, stored.owner) == (JobState.QUEUED, 0, first.request, "alice")
    again, duplicate = await store.submit(job(key="k1"), max_queued=10)
    assert duplicate and again.job_id == first.job_id
    other, duplicate = await store.submit(job(owner="bob", key="k1"), max_queued=10)  # keys are per owner
    assert not duplicate and other.job_id != first.job_id
    assert (await store.counts())[JobState.QUEUED] == 2
    assert await store.get(new_job_id()) is None


async def test_queue_bound(make_store: StoreFactory) -> None:
    store = make_store("w1")
    for _ in range(2):
        await store.submit(job(), max_queued=2)
    with pytest.raises(QueueFull) as caught:
        await store.submit(job(), max_queued=2)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 jobs are queued (bound 2)" in caught.value.message
    assert len(await store.claim("w1", 1, 10.0)) == 1  # a running job no longer counts as queued
    await store.submit(job(), max_queued=2)


async def test_lease_expiry_redelivers_and_a_stale_lease_cannot_complete(make_store: StoreFactory) -> None:
    dead, alive = make_store("dead"), make_store("alive")
    submitted, _ = await dead.submit(job(), max_queued=10)
    [first] = await dead.claim("dead", 5, 0.3)
    assert (first.job.state, first.job.attempts, first.redelivered) == (JobState.RUNNING, 1, False)
    assert await alive.claim("alive", 5, 0.3) == []  # the lease holds
    await asyncio.sleep(0.45)  # "dead" stops heartbeating
    [second] = await alive.claim("alive", 5, 0.3)
    assert second.job.job_id == submitted.job_id
    assert (second.job.attempts, second.redelivered) == (2, True)
    assert second.token != first.token
    # The first worker wakes up late: its outcome is refused, whatever the order.
    assert not await dead.complete(submitted.job_id, first.token, JobState.SUCCEEDED, response=b"late")
    assert await alive.complete(submitted.job_id, second.token, JobState.SUCCEEDED, response=b"right")
    assert not await dead.complete(submitted.job_id, first.token, JobState.FAILED, error_code=13, error_message="x")
    assert not await alive.complete(submitted.job_id, second.token, JobState.SUCCEEDED, response=b"twice")
    final = await alive.get(submitted.job_id)
    assert final is not None
    assert (final.state, final.response, final.completions, final.attempts) == (JobState.SUCCEEDED, b"right", 1, 2)
    assert final.end_time is not None and final.expire_time == pytest.approx(final.end_time + 60.0)


async def test_heartbeat_keeps_the_lease(make_store: StoreFactory) -> None:
    holder, other = make_store("holder"), make_store("other")
    await holder.submit(job(), max_queued=10)
    [lease] = await holder.claim("holder", 1, 0.3)
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await holder.renew(lease.job.job_id, lease.token, 0.3)
        assert await other.claim("other", 1, 0.3) == []
    assert not await holder.renew(lease.job.job_id, "not-the-token", 0.3)


async def test_last_attempt_lost_fails_the_job(make_store: StoreFactory) -> None:
    store = make_store("w1")
    submitted, _ = await store.submit(job(max_attempts=1), max_queued=10)
    await store.claim("w1", 1, 0.2)
    await asyncio.sleep(0.3)
    assert await store.claim("w2", 1, 0.2) == []
    failed = await store.get(submitted.job_id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error_code == grpc.StatusCode.ABORTED.value[0]
    assert "attempt 1 of 1 did not finish" in failed.error_message
    assert (await store.counts())[JobState.FAILED] == 1


async def test_cancel_queued_and_running(make_store: StoreFactory) -> None:
    store = make_store("w1")
    queued, _ = await store.submit(job(), max_queued=10)
    cancelled = await store.cancel(queued.job_id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert cancelled.error_code == grpc.StatusCode.CANCELLED.value[0]
    assert await store.claim("w1", 5, 10.0) == []  # a cancelled queued job never runs

    running, _ = await store.submit(job(), max_queued=10)
    [lease] = await store.claim("w1", 5, 10.0)
    cancelled = await store.cancel(running.job_id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert not await store.renew(running.job_id, lease.token, 10.0)  # the worker's heartbeat learns it
    assert not await store.complete(running.job_id, lease.token, JobState.SUCCEEDED, response=b"x")
    after = await store.get(running.job_id)
    assert after is not None and (after.state, after.response, after.completions) == (JobState.CANCELLED, b"", 0)
    again = await store.cancel(running.job_id)  # cancelling an ended job changes nothing
    assert again is not None and again.end_time == after.end_time
    assert await store.cancel(new_job_id()) is None
    counts = await store.counts()
    assert (counts[JobState.CANCELLED], counts[JobState.QUEUED], counts[JobState.RUNNING]) == (2, 0, 0)


async def test_requeue_gives_the_job_another_attempt(make_store: StoreFactory) -> None:
    store = make_store("w1")
    submitted, _ = await store.submit(job(), max_queued=10)
    [lease] = await store.claim("w1", 1, 10.0)
    assert await store.requeue(submitted.job_id, lease.token, error_code=14, error_message="backend down")
    assert not await store.requeue(submitted.job_id, lease.token, error_code=14, error_message="again")
    [retry] = await store.claim("w1", 1, 10.0)
    assert (retry.job.attempts, retry.redelivered) == (2, False)
    assert await store.complete(submitted.job_id, retry.token, JobState.FAILED, error_code=3, error_message="bad")
    failed = await store.get(submitted.job_id)
    assert failed is not None and (failed.state, failed.error_code, failed.error_message) == (
        JobState.FAILED,
        3,
        "bad",
    )


async def test_results_expire_then_jobs_are_removed(make_store: StoreFactory) -> None:
    store = make_store("w1")
    submitted, _ = await store.submit(job(key="once", ttl_s=0.3), max_queued=10)
    kept, _ = await store.submit(job(ttl_s=60.0), max_queued=10)
    for lease in await store.claim("w1", 2, 10.0):
        assert await store.complete(lease.job.job_id, lease.token, JobState.SUCCEEDED, response=b"result")
    assert await store.sweep() == 0
    await asyncio.sleep(0.4)
    assert await store.sweep() == 1
    expired = await store.get(submitted.job_id)
    assert expired is not None and (expired.state, expired.response, expired.request) == (JobState.EXPIRED, b"", b"")
    await asyncio.sleep(0.4)
    assert await store.sweep() == 1
    assert await store.get(submitted.job_id) is None
    assert [r.job_id for r in await store.by_owner("alice", 10)] == [kept.job_id]
    counts = await store.counts()
    assert (counts[JobState.EXPIRED], counts[JobState.SUCCEEDED]) == (0, 1)
    fresh, duplicate = await store.submit(job(key="once"), max_queued=10)  # the key was freed with the job
    assert not duplicate and fresh.job_id != submitted.job_id


async def test_list_pages_newest_first(make_store: StoreFactory) -> None:
    store = make_store("w1")
    ids = []
    for _ in range(5):
        record = job()
        ids.append(record.job_id)
        await store.submit(record, max_queued=100)
        await asyncio.sleep(0.002)
    await store.submit(job(owner="bob"), max_queued=100)
    seen: list[str] = []
    after = None
    while True:
        page = await store.by_owner("alice", 2, after)
        seen += [r.job_id for r in page]
        if len(page) < 2:
            break
        after = (page[-1].create_time, page[-1].job_id)
    assert seen == ids[::-1]
    assert all(r.request == b"" for r in await store.by_owner("alice", 5))  # listing carries no payloads


async def test_unreachable_store_is_unavailable(tmp_path: Path, redis_server: RedisServer) -> None:
    store = RedisJobStore(redis_server.url, consumer="w1", op_timeout_s=0.5)
    await store.submit(job(), max_queued=10)
    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.submit(job(), max_queued=10)
    assert time.monotonic() - started < 1.5
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"Redis at 127.0.0.1:{redis_server.port}" in caught.value.message
    await store.close()

    (tmp_path / "not-a-file").mkdir()
    sqlite = SqliteJobStore(tmp_path / "not-a-file", op_timeout_s=0.5)
    with pytest.raises(StoreUnavailable, match="not-a-file"):
        await sqlite.submit(job(), max_queued=10)
    await sqlite.close()


async def test_redis_sweep_removes_idle_consumers_but_keeps_those_with_pending_jobs(redis_server: RedisServer) -> None:
    sweeper = RedisJobStore(redis_server.url, consumer="sweeper", op_timeout_s=1.0, consumer_idle_s=0.0)
    idle = RedisJobStore(redis_server.url, consumer="idle", op_timeout_s=1.0)
    busy = RedisJobStore(redis_server.url, consumer="busy", op_timeout_s=1.0)
    try:
        await sweeper.submit(job(), max_queued=10)
        assert len(await busy.claim("busy", 1, 30.0)) == 1  # one entry pending while its job runs
        assert await idle.claim("idle", 1, 30.0) == []  # joined the group, holds nothing
        await asyncio.sleep(0.05)
        await sweeper.sweep()
        consumers = await sweeper._client.xinfo_consumers(sweeper._key("stream"), "workers")
        assert sorted(c["name"].decode() for c in consumers) == ["busy"]
    finally:
        for store in (sweeper, idle, busy):
            await store.close()
