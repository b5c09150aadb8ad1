"""The Redis job store: shared by every gateway process pointing at one Redis, survives any of them dying.

Layout (every key under ``key_prefix``, default ``sy:jobs:``):

* ``job:<id>`` — a hash: the job's fields, its lease (``lease_token``,
  ``lease_expires``) and the id of its current stream entry (``entry``).
* ``stream`` — a Redis Stream with one entry per QUEUED or RUNNING job, read
  by the consumer group ``workers``; each process is one consumer. A claimed
  entry stays in the group's pending list until the job ends. A heartbeat
  re-claims it (``XCLAIM``, resetting its idle time); when a process dies its
  entries go idle, and after the visibility timeout another process takes them
  over with ``XAUTOCLAIM`` and runs the jobs again.
* ``counts`` — a hash of jobs per state (queue depth, and the submit bound).
* ``owner:<owner>`` — a sorted set of the owner's job ids by create time (ListJobs).
* ``idem:<len>:<owner>:<key>`` — the job id an idempotency key maps to.
* ``expiry`` — a sorted set of ended jobs by the time the sweeper next acts on them.

Every transition is one Lua script, so it is atomic: the state change, the
per-state counts, the stream entry and the lease check happen together or not
at all. ``complete`` and ``requeue`` only act while the caller's lease token is
the job's, so a worker that lost its lease cannot overwrite the outcome.
Times are the gateway processes' wall clocks (keep them in sync, as with NTP).
Durability across a Redis restart is Redis's own (enable AOF with
``appendfsync everysec`` or ``always`` for the job queue). Not for Redis
Cluster: the scripts touch keys they compute.

Every call is bounded by ``op_timeout_s``; a Redis that is down, refuses or
does not answer raises :class:`StoreUnavailable` naming its address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.proxy.jobs.records import (
    CANCELLED_CODE,
    LEASE_LOST_CODE,
    JobOutcome,
    JobRecord,
    JobState,
    Lease,
    QueueFull,
    StoreUnavailable,
    new_lease_token,
)
from switchyard.proxy.jobs.store import JobStore

GROUP = "workers"

# Shared Lua helpers: move a job between states in the counts hash; drop its stream entry.
_LUA_HELPERS = """
local p = ARGV[1]
local stream = p .. 'stream'
local function move(from, to)
  redis.call('HINCRBY', p .. 'counts', from, -1)
  redis.call('HINCRBY', p .. 'counts', to, 1)
end
local function drop_entry(entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, 'workers', entry)
    redis.call('XDEL', stream, entry)
  end
end
"""

# ARGV: prefix, job id, idempotency key name ('' for none), max queued, owner key, create time, field, value, ...
_SUBMIT = (
    _LUA_HELPERS
    + """
local id, idem, max_queued = ARGV[2], ARGV[3], tonumber(ARGV[4])
if idem ~= '' then
  local existing = redis.call('GET', idem)
  if existing then return {'DUP', existing} end
end
local queued = tonumber(redis.call('HGET', p .. 'counts', 'QUEUED') or '0')
if queued >= max_queued then return {'FULL', tostring(queued)} end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', stream, '*', 'job', id)
redis.call('HSET', p .. 'job:' .. id, 'entry', entry, 'state', 'QUEUED', unpack(fields))
redis.call('HINCRBY', p .. 'counts', 'QUEUED', 1)
redis.call('ZADD', ARGV[5], ARGV[6], id)
if idem ~= '' then redis.call('SET', idem, id) end
return {'OK', id}
"""
)

# ARGV: prefix, job id, entry id, now, lease seconds, new token, lease-lost code
_CLAIM = (
    _LUA_HELPERS
    + """
local id, entry, now, lease, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local key = p .. 'job:' .. id
local state = redis.call('HGET', key, 'state')
if (not state) or redis.call('HGET', key, 'entry') ~= entry then
  drop_entry(entry)  -- the job was removed, or requeued under a newer entry
  return {'GONE'}
end
if state == 'RUNNING' then
  if (tonumber(redis.call('HGET', key, 'lease_expires') or '') or 0) >= now then return {'HELD'} end
  local attempts = tonumber(redis.call('HGET', key, 'attempts'))
  local max = tonumber(redis.call('HGET', key, 'max_attempts'))
  if attempts >= max then
    local ttl = tonumber(redis.call('HGET', key, 'result_ttl_s'))
    redis.call('HSET', key, 'state', 'FAILED', 'lease_token', '', 'lease_expires', '', 'end_time', now,
      'expire_time', now + ttl, 'error_code', ARGV[7], 'error_message', 'attempt ' .. attempts .. ' of ' .. max ..
      ' did not finish: its worker stopped renewing the lease (the process died or stalled)')
    move('RUNNING', 'FAILED')
    redis.call('ZADD', p .. 'expiry', now + ttl, id)
    drop_entry(entry)
    return {'FAILED'}
  end
elseif state ~= 'QUEUED' then
  drop_entry(entry)
  return {'GONE'}
end
redis.call('HSET', key, 'state', 'RUNNING', 'lease_token', token, 'lease_expires', now + lease)
redis.call('HINCRBY', key, 'attempts', 1)
local started = redis.call('HGET', key, 'start_time')
if (not started) or started == '' then redis.call('HSET', key, 'start_time', now) end
if state == 'QUEUED' then move('QUEUED', 'RUNNING') end
return {'CLAIMED', state, redis.call('HGETALL', key)}
"""
)

# ARGV: prefix, job id, token, now, lease seconds, consumer
_RENEW = (
    _LUA_HELPERS
    + """
local key = p .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'state') ~= 'RUNNING' or redis.call('HGET', key, 'lease_token') ~= ARGV[3] then
  return 0
end
redis.call('HSET', key, 'lease_expires', tonumber(ARGV[4]) + tonumber(ARGV[5]))
redis.call('XCLAIM', stream, 'workers', ARGV[6], 0, redis.call('HGET', key, 'entry'), 'JUSTID')
return 1
"""
)

# ARGV: prefix, job id, token, now, state, response, error code, error message
_COMPLETE = (
    _LUA_HELPERS
    + """
local id, now, state = ARGV[2], tonumber(ARGV[4]), ARGV[5]
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'state') ~= 'RUNNING' or redis.call('HGET', key, 'lease_token') ~= ARGV[3] then
  return 0
end
local ttl = tonumber(redis.call('HGET', key, 'result_ttl_s'))
redis.call('HSET', key, 'state', state, 'response', ARGV[6], 'error_code', ARGV[7], 'error_message', ARGV[8],
  'end_time', now, 'expire_time', now + ttl, 'lease_token', '', 'lease_expires', '')
redis.call('HINCRBY', key, 'completions', 1)
move('RUNNING', state)
redis.call('ZADD', p .. 'expiry', now + ttl, id)
drop_entry(redis.call('HGET', key, 'entry'))
return 1
"""
)

# ARGV: prefix, job id, token, error code, error message
_REQUEUE = (
    _LUA_HELPERS
    + """
local id = ARGV[2]
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'state') ~= 'RUNNING' or redis.call('HGET', key, 'lease_token') ~= ARGV[3] then
  return 0
end
drop_entry(redis.call('HGET', key, 'entry'))
local entry = redis.call('XADD', stream, '*', 'job', id)
redis.call('HSET', key, 'state', 'QUEUED', 'entry', entry, 'lease_token', '', 'lease_expires', '',
  'error_code', ARGV[4], 'error_message', ARGV[5])
move('RUNNING', 'QUEUED')
return 1
"""
)

# ARGV: prefix, job id, now, cancelled code
_CANCEL = (
    _LUA_HELPERS
    + """
local id, now = ARGV[2], tonumber(ARGV[3])
local key = p .. 'job:' .. id
local state = redis.call('HGET', key, 'state')
if not state then return false end
if state == 'QUEUED' or state == 'RUNNING' then
  local ttl = tonumber(redis.call('HGET', key, 'result_ttl_s'))
  redis.call('HSET', key, 'state', 'CANCELLED', 'lease_token', '', 'lease_expires', '', 'end_time', now,
    'expire_time', now + ttl, 'error_code', ARGV[4], 'error_message', 'cancelled by CancelJob')
  move(state, 'CANCELLED')
  redis.call('ZADD', p .. 'expiry', now + ttl, id)
  drop_entry(redis.call('HGET', key, 'entry'))
end
return redis.call('HGETALL', key)
"""
)

# ARGV: prefix, now, limit
_SWEEP = (
    _LUA_HELPERS
    + """
local now = tonumber(ARGV[2])
local changed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local key = p .. 'job:' .. id
  local state = redis.call('HGET', key, 'state')
  if not state then
    redis.call('ZREM', p .. 'expiry', id)
  elseif state == 'EXPIRED' then
    redis.call('ZREM', p .. 'owner:' .. redis.call('HGET', key, 'owner'), id)
    local idem = redis.call('HGET', key, 'idempotency_key_name')
    if idem and idem ~= '' then redis.call('DEL', idem) end
    redis.call('DEL', key)
    redis.call('ZREM', p .. 'expiry', id)
    redis.call('HINCRBY', p .. 'counts', 'EXPIRED', -1)
    changed = changed + 1
  elseif state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' then
    redis.call('HSET', key, 'state', 'EXPIRED')
    redis.call('HDEL', key, 'request', 'response')
    move(state, 'EXPIRED')
    redis.call('ZADD', p .. 'expiry', now + tonumber(redis.call('HGET', key, 'result_ttl_s')), id)
    changed = changed + 1
  else
    redis.call('ZREM', p .. 'expiry', id)
  end
end
return changed
"""
)

_LIGHT_FIELDS = (
    "job_id",
    "owner",
    "idempotency_key",
    "route",
    "request_id",
    "state",
    "attempts",
    "max_attempts",
    "create_time",
    "start_time",
    "end_time",
    "result_ttl_s",
    "expire_time",
    "error_code",
    "error_message",
    "completions",
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def _time(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _record(fields: dict[str, Any]) -> JobRecord:
    def get(name: str) -> Any:
        return fields.get(name)

    return JobRecord(
        job_id=_text(get("job_id")),
        owner=_text(get("owner")),
        route=_text(get("route")),
        request_id=_text(get("request_id")),
        state=JobState(_text(get("state"))),
        max_attempts=int(_text(get("max_attempts")) or 1),
        create_time=float(_text(get("create_time")) or 0),
        result_ttl_s=float(_text(get("result_ttl_s")) or 0),
        attempts=int(_text(get("attempts")) or 0),
        idempotency_key=_text(get("idempotency_key")),
        start_time=_time(get("start_time")),
        end_time=_time(get("end_time")),
        expire_time=_time(get("expire_time")),
        request=get("request") or b"",
        response=get("response") or b"",
        error_code=int(_text(get("error_code")) or 0),
        error_message=_text(get("error_message")),
        completions=int(_text(get("completions")) or 0),
    )


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


class RedisJobStore(JobStore):
    """Jobs in the Redis at ``url``; ``consumer`` names this process in the stream's consumer group."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        consumer: str,
        op_timeout_s: float = 2.0,
        key_prefix: str = "sy:jobs:",
        clock: Any = None,
        consumer_idle_s: float = 3600.0,
    ) -> None:
        import time

        self.op_timeout_s = op_timeout_s
        # Consumers (processes) idle this long with nothing pending are removed from
        # the group by the sweep: every process start adds one, and dead ones would pile up.
        self.consumer_idle_s = consumer_idle_s
        self.prefix = key_prefix
        self.consumer = consumer
        self._clock = clock or time.time
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=op_timeout_s,
            socket_timeout=op_timeout_s,
            health_check_interval=0,
        )
        kwargs = self._client.connection_pool.connection_kwargs
        self.address = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}" if "host" in kwargs else url
        self._scripts = {
            name: self._client.register_script(source)
            for name, source in {
                "submit": _SUBMIT,
                "claim": _CLAIM,
                "renew": _RENEW,
                "complete": _COMPLETE,
                "requeue": _REQUEUE,
                "cancel": _CANCEL,
                "sweep": _SWEEP,
            }.items()
        }
        self._group_ready = False
        self._autoclaim_cursor = "0-0"

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def _key(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def _idem_key(self, owner: str, key: str) -> str:
        return self._key(f"idem:{len(owner)}:{owner}:{key}")

    async def _call(self, what: str, command: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await command
        except TimeoutError:
            raise StoreUnavailable(
                f"job store unavailable: Redis at {self.address} did not answer {what} within {self.op_timeout_s:g} s"
            ) from None
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # Redis restarted empty: the group is made again on the next claim
            raise StoreUnavailable(f"job store unavailable: Redis at {self.address}: {exc}") from None
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(f"job store unavailable: Redis at {self.address}: {exc}") from None

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._call(name, self._scripts[name](keys=[], args=[self.prefix, *args]))

    async def ping(self) -> bool:
        return bool(await self._call("PING", self._client.ping()))

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._call(
                "XGROUP CREATE", self._client.xgroup_create(self._key("stream"), GROUP, id="0", mkstream=True)
            )
        except StoreUnavailable as exc:
            if "BUSYGROUP" not in exc.message:
                raise
        self._group_ready = True

    # -- the interface --------------------------------------------------------

    async def submit(self, job: JobRecord, *, max_queued: int) -> tuple[JobRecord, bool]:
        idem = self._idem_key(job.owner, job.idempotency_key) if job.idempotency_key else ""
        fields: list[Any] = [
            "job_id", job.job_id, "owner", job.owner, "idempotency_key", job.idempotency_key,
            "idempotency_key_name", idem, "route", job.route, "request_id", job.request_id,
            "attempts", 0, "max_attempts", job.max_attempts, "create_time", repr(job.create_time),
            "result_ttl_s", repr(job.result_ttl_s), "request", job.request, "completions", 0,
            "error_code", 0, "error_message", "",
        ]  # fmt: skip
        outcome = await self._script(
            "submit", job.job_id, idem, max_queued, self._key("owner:", job.owner), repr(job.create_time), *fields
        )
        status = _text(outcome[0])
        if status == "DUP":
            existing = await self.get(_text(outcome[1]))
            if existing is not None:
                return existing, True
            raise StoreUnavailable("job store: the job of this idempotency key was removed while being read; retry")
        if status == "FULL":
            raise QueueFull(int(_text(outcome[1])), max_queued)
        return job, False

    async def get(self, job_id: str) -> JobRecord | None:
        fields = await self._call("HGETALL", self._client.hgetall(self._key("job:", job_id)))
        if not fields:
            return None
        return _record({_text(k): v for k, v in fields.items()})

    async def by_owner(self, owner: str, limit: int, after: tuple[float, str] | None = None) -> list[JobRecord]:
        key = self._key("owner:", owner)
        records: list[JobRecord] = []
        top: str = "+inf" if after is None else repr(after[0])
        while len(records) < limit:
            want = limit - len(records) + 16
            found = await self._call(
                "ZREVRANGEBYSCORE",
                self._client.zrevrangebyscore(key, top, "-inf", start=0, num=want, withscores=True),
            )
            if not found:
                break
            ids = []
            for member, score in found:
                job_id = _text(member)
                if after is not None and (score > after[0] or (score == after[0] and job_id >= after[1])):
                    continue
                ids.append(job_id)
            for job_id in ids:
                values = await self._call("HMGET", self._client.hmget(self._key("job:", job_id), _LIGHT_FIELDS))
                if values[0] is None:
                    continue  # removed meanwhile
                records.append(_record(dict(zip(_LIGHT_FIELDS, values, strict=True))))
                if len(records) == limit:
                    break
            if len(found) < want:
                break
            last_member, last_score = found[-1]
            after = (float(last_score), _text(last_member))
            top = repr(after[0])
        return records

    async def claim(self, worker: str, limit: int, lease_s: float) -> list[Lease]:
        if limit <= 0:
            return []
        await self._ensure_group()
        stream = self._key("stream")
        entries: list[tuple[str, str | None]] = []
        # Entries idle longer than a lease belong to a worker that stopped renewing: take them over.
        reply = await self._call(
            "XAUTOCLAIM",
            self._client.xautoclaim(
                stream, GROUP, self.consumer, int(lease_s * 1000), start_id=self._autoclaim_cursor, count=limit
            ),
        )
        self._autoclaim_cursor = _text(reply[0]) or "0-0"
        for entry_id, fields in reply[1]:
            entries.append((_text(entry_id), _text((fields or {}).get(b"job")) or None))
        if len(entries) < limit:
            read = await self._call(
                "XREADGROUP",
                self._client.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=limit - len(entries)),
            )
            for _stream, items in read or ():
                for entry_id, fields in items:
                    entries.append((_text(entry_id), _text((fields or {}).get(b"job")) or None))
        leases = []
        now = self._clock()
        for entry_id, job_id in entries:
            if job_id is None:
                await self._call("XACK", self._client.xack(stream, GROUP, entry_id))
                continue
            token = new_lease_token()
            outcome = await self._script("claim", job_id, entry_id, repr(now), repr(lease_s), token, LEASE_LOST_CODE)
            if _text(outcome[0]) == "CLAIMED":
                leases.append(Lease(_record(_pairs(outcome[2])), token, redelivered=_text(outcome[1]) == "RUNNING"))
        return leases

    async def renew(self, job_id: str, token: str, lease_s: float) -> bool:
        return bool(await self._script("renew", job_id, token, repr(self._clock()), repr(lease_s), self.consumer))

    async def _complete(self, job_id: str, token: str, outcome: JobOutcome) -> bool:
        done = await self._script(
            "complete",
            job_id,
            token,
            repr(self._clock()),
            outcome.state.value,
            outcome.response,
            outcome.error_code,
            outcome.error_message,
        )
        return bool(done)

    async def requeue(self, job_id: str, token: str, *, error_code: int, error_message: str) -> bool:
        return bool(await self._script("requeue", job_id, token, error_code, error_message))

    async def cancel(self, job_id: str) -> JobRecord | None:
        flat = await self._script("cancel", job_id, repr(self._clock()), CANCELLED_CODE)
        if not flat:
            return None
        return _record(_pairs(flat))

    async def sweep(self) -> int:
        swept = int(await self._script("sweep", repr(self._clock()), 500))
        await self._prune_consumers()
        return swept

    async def _prune_consumers(self) -> list[str]:
        """Removes other consumers idle past ``consumer_idle_s`` with no pending entries; returns their names.

        A dead process's pending entries are first taken over by XAUTOCLAIM
        (after the visibility timeout), so a consumer with entries still
        pending is kept: deleting it would drop them from the group.
        """
        stream = self._key("stream")
        try:
            consumers = await self._call("XINFO CONSUMERS", self._client.xinfo_consumers(stream, GROUP))
        except StoreUnavailable:
            return []  # no group yet (nothing claimed since Redis started): nothing to prune
        removed = []
        for consumer in consumers:
            name = _text(consumer["name"])
            # Redis 7.2+ reports "inactive" (since its last successful read; -1 if none), older ones "idle".
            inactive = int(consumer.get("inactive", -1))
            idle_ms = inactive if inactive >= 0 else int(consumer["idle"])
            if name != self.consumer and int(consumer["pending"]) == 0 and idle_ms > self.consumer_idle_s * 1000:
                await self._call("XGROUP DELCONSUMER", self._client.xgroup_delconsumer(stream, GROUP, name))
                removed.append(name)
        return removed

    async def counts(self) -> dict[JobState, int]:
        found = await self._call("HGETALL", self._client.hgetall(self._key("counts")))
        by_name = {_text(k): int(_text(v)) for k, v in found.items()}
        return {state: by_name.get(state.value, 0) for state in JobState}

    async def close(self) -> None:
        await self._client.aclose()
