"""A load generator worker process: a uvloop event loop driving closed- or open-loop load and reporting per window.

The parent (``generator``) sends it commands over a pipe (``probe``, ``run``,
``stop``, ``exit``); it answers with each window's counts, latency histogram
and its own CPU time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.loadgen.histogram import LatencyHistogram
from benchmarks.loadgen.http1 import HttpClient, HttpStatusError
from benchmarks.loadgen.results import Windows
from benchmarks.loadgen.stream import StreamCaller, StreamStatusError
from benchmarks.loadgen.target import STREAMING, Target

MAX_OUTSTANDING_PER_WORKER = 4096
"""Open loop: requests in flight per worker before further sends are counted as ``LOADGEN_OVERFLOW``."""

LATE_SEND_US = 1000
"""Open loop: a send more than this after its scheduled time counts as late."""


class _Recorder:
    """Per-window counts and histograms of one worker, indexed by completion time."""

    def __init__(self, measure_start: float, window_s: float, max_windows: int) -> None:
        self.measure_start = measure_start
        self.window_s = window_s
        self.histograms = [LatencyHistogram() for _ in range(max_windows)]
        self.ok = [0] * max_windows
        self.errors: list[dict[str, int]] = [{} for _ in range(max_windows)]
        self.late = [0] * max_windows
        self.max_lag = [0] * max_windows

    def _index(self, t: float) -> int | None:
        index = math.floor((t - self.measure_start) / self.window_s)
        return index if 0 <= index < len(self.ok) else None

    def success(self, started: float, done: float) -> None:
        index = self._index(done)
        if index is not None:
            self.histograms[index].record(round((done - started) * 1e6))
            self.ok[index] += 1

    def error(self, done: float, code: str) -> None:
        index = self._index(done)
        if index is not None:
            self.errors[index][code] = self.errors[index].get(code, 0) + 1

    def send_lag(self, sent: float, lag_s: float) -> None:
        index = self._index(sent)
        if index is not None:
            lag_us = round(lag_s * 1e6)
            self.late[index] += lag_us > LATE_SEND_US
            self.max_lag[index] = max(self.max_lag[index], lag_us)

    def payload(self, index: int, cpu_s: float) -> dict[str, Any]:
        return {
            "op": "window",
            "index": index,
            "ok": self.ok[index],
            "errors": self.errors[index],
            "histogram": self.histograms[index].to_payload(),
            "cpu_s": cpu_s,
            "late": self.late[index],
            "max_lag_us": self.max_lag[index],
        }


async def _recv(conn: Connection) -> Any:
    """``conn.recv()`` without blocking the event loop while nothing has arrived."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _round_robin(calls: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    """A callable handing each call to the next of ``calls`` in turn (one per connection)."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)

    def call(request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> Any:
        return next(turn)(request, timeout=timeout, wait_for_ready=wait_for_ready)

    return call


def _sequence(call: Callable[..., Any], following: Sequence[bytes]) -> Callable[..., Any]:
    """A callable making ``call(request)`` and then ``call`` on each of ``following`` in turn; the first answer."""

    async def run(request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        answer: bytes = await call(request, timeout=timeout, wait_for_ready=wait_for_ready)
        for next_request in following:
            await call(next_request, timeout=timeout, wait_for_ready=wait_for_ready)
        return answer

    return run


def _status(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, HttpStatusError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, StreamStatusError):
        return exc.code
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def _closed_loop(
    call: Callable[..., Any],
    request: bytes,
    users: int,
    end_at: float,
    timeout_s: float,
    recorder: _Recorder,
    stop: asyncio.Event,
) -> None:
    async def user() -> None:
        clock = time.monotonic
        while not stop.is_set():
            started = clock()
            if started >= end_at:
                return
            try:
                await call(request, timeout=timeout_s)
            except Exception as exc:  # every failure is a counted outcome
                recorder.error(clock(), _status(exc))
            else:
                recorder.success(started, clock())

    await asyncio.gather(*(user() for _ in range(users)))


async def _open_loop(
    call: Callable[..., Any],
    request: bytes,
    rate: float,
    first_at: float,
    end_at: float,
    timeout_s: float,
    recorder: _Recorder,
    stop: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            await call(request, timeout=timeout_s)
        except Exception as exc:  # every failure is a counted outcome
            recorder.error(clock(), _status(exc))
        else:
            recorder.success(scheduled, clock())  # from the scheduled send time, not the actual one

    interval = 1.0 / rate
    scheduled = first_at
    while not stop.is_set() and scheduled < end_at:
        now = clock()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
            continue
        while scheduled <= now and scheduled < end_at:  # everything due, including what a late wake-up missed
            recorder.send_lag(now, now - scheduled)
            if len(in_flight) >= MAX_OUTSTANDING_PER_WORKER:
                recorder.error(now, "LOADGEN_OVERFLOW")
            else:
                task = loop.create_task(one(scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            scheduled += interval
    if in_flight:
        _, pending = await asyncio.wait(in_flight, timeout=timeout_s + 1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _run(conn: Connection, call: Callable[..., Any], request: bytes, command: dict[str, Any]) -> None:
    settings: Windows = command["windows"]
    start_at: float = command["start_at"]
    measure_start = start_at + settings.warmup_s
    end_at = measure_start + settings.max_windows * settings.window_s
    recorder = _Recorder(measure_start, settings.window_s, settings.max_windows)
    stop = asyncio.Event()

    async def watch() -> None:
        message = await _recv(conn)
        if message.get("op") != "stop":
            raise RuntimeError(f"unexpected message during a run: {message!r}")
        stop.set()

    async def report() -> None:
        await _sleep_until(measure_start)
        cpu = time.process_time()
        for index in range(settings.max_windows):
            await _sleep_until(measure_start + (index + 1) * settings.window_s)
            if stop.is_set():
                return
            now_cpu = time.process_time()
            conn.send(recorder.payload(index, now_cpu - cpu))
            cpu = now_cpu

    await _sleep_until(start_at)
    if command["mode"] == "closed":
        load = _closed_loop(call, request, int(command["load"]), end_at, settings.timeout_s, recorder, stop)
    else:
        rate = float(command["load"])
        first_at = start_at + command["phase"] / rate if rate > 0 else end_at
        load = _open_loop(call, request, rate, first_at, end_at, settings.timeout_s, recorder, stop)
    watcher = asyncio.ensure_future(watch())
    reporter = asyncio.ensure_future(report())
    try:
        if command["load"]:
            await load  # until end_at, or until the parent's "stop"
        else:
            load.close()  # this worker's share is 0: it only reports empty windows
        await watcher  # the parent ends every run with "stop", once it has the windows it needs
    finally:
        for task in (reporter, watcher):
            task.cancel()
        await asyncio.gather(reporter, watcher, return_exceptions=True)
    conn.send({"op": "done"})


async def _worker(conn: Connection) -> None:
    import grpc

    from switchyard.v1.channel import channel_options

    channels: dict[tuple[str, int], grpc.aio.Channel] = {}
    streams: dict[Target, StreamCaller] = {}
    http_clients: dict[str, HttpClient] = {}
    requests: dict[Target, bytes] = {}
    try:
        while True:
            command = await _recv(conn)
            if command["op"] == "exit":
                return
            target: Target = command["target"]
            call: Callable[..., Any]
            if target.protocol == "http":
                call = http_clients.setdefault(target.address, HttpClient(target.address))
            else:
                # Channels of their own subchannel pool (channel_options): one connection each.
                for i in range(target.connections):
                    if (target.address, i) not in channels:
                        channels[target.address, i] = grpc.aio.insecure_channel(
                            target.address, options=channel_options()
                        )
                channel = channels[target.address, 0]
                if target.protocol in STREAMING:
                    if target not in streams:
                        streams[target] = StreamCaller(channel, target.method, oip=target.protocol == "oip_stream")
                    call = streams[target]
                else:
                    # No serializers: bytes in, bytes out.
                    call = _round_robin(
                        [channels[target.address, i].unary_unary(target.method) for i in range(target.connections)]
                    )
                    if target.then:
                        requests_after = [replace(target, route=r, then=()).request_bytes() for r in target.then]
                        call = _sequence(call, requests_after)
            if target not in requests:
                requests[target] = target.request_bytes()
            if command["op"] == "probe":
                started = time.monotonic()
                try:
                    answer = await call(requests[target], timeout=command["timeout_s"], wait_for_ready=True)
                except Exception as exc:
                    conn.send({"op": "probe", "error": _describe(exc)})
                else:
                    latency = time.monotonic() - started
                    conn.send({"op": "probe", "error": target.check_response(answer), "latency_s": latency})
            elif command["op"] == "run":
                await _run(conn, call, requests[target], command)
            else:
                raise RuntimeError(f"unknown command {command!r}")
    finally:
        for stream in streams.values():
            await stream.close()
        for channel in channels.values():
            await channel.close()
        for client in http_clients.values():
            await client.close()


def worker_main(conn: Connection) -> None:
    import uvloop

    try:
        uvloop.run(_worker(conn))
    except (EOFError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        conn.close()
