"""The parent side: :class:`LoadGenerator`, a pool of worker processes measuring one point at a time.

It aligns the workers' windows, reads the servers' CPU at each boundary,
merges the workers' reports and decides when the windows agree.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.loadgen.cpu import CpuSnapshot, check_servers, process_tree
from benchmarks.loadgen.errors import LoadGeneratorError
from benchmarks.loadgen.histogram import LatencyHistogram
from benchmarks.loadgen.results import WindowResult, Windows, converged, summarize
from benchmarks.loadgen.target import Target
from benchmarks.loadgen.worker import worker_main

_STARTUP_MARGIN_S = 0.3
"""Time the workers get between the command and the start of a point."""


@dataclass
class LoadGenerator:
    """A pool of worker processes driving load; use as a context manager.

    ``servers`` maps a name to the pid of a server process whose CPU time (with
    its descendants') is charged per request; it may be changed between points.
    ``counters``, when given, returns running totals by name (Triton's
    execution count, say); it is called at the same window boundaries as the
    CPU times are read, and each total's increase is reported per request
    (``counters_per_request``).
    """

    workers: int = 2
    servers: dict[str, int] = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda message: None)
    counters: Callable[[], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        context = multiprocessing.get_context("spawn")  # gRPC state must never cross a fork
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        for index in range(self.workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=worker_main, args=(child_end,), name=f"loadgen-{index}", daemon=True)
            process.start()
            child_end.close()
            self._conns.append(parent_end)
            self._processes.append(process)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send({"op": "exit"})
            except OSError:
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _receive(self, conn: Connection, op: str, timeout_s: float) -> dict[str, Any]:
        while True:
            try:
                if not conn.poll(timeout_s):
                    raise LoadGeneratorError(f"a load generator worker sent no {op!r} within {timeout_s:g} s")
                message: dict[str, Any] = conn.recv()
            except (EOFError, OSError) as exc:
                raise LoadGeneratorError("a load generator worker exited (its traceback is on stderr)") from exc
            if message["op"] == op:
                return message
            if message["op"] != "window":  # late windows after a stop are dropped
                raise LoadGeneratorError(f"unexpected message from a worker: {message!r}")

    def probe(self, target: Target, timeout_s: float = 10.0) -> float:
        """Send one request from every worker and check the answers; returns the slowest latency in seconds."""
        for conn in self._conns:
            conn.send({"op": "probe", "target": target, "timeout_s": timeout_s})
        slowest = 0.0
        for conn in self._conns:
            message = self._receive(conn, "probe", timeout_s + 30.0)
            if message["error"]:
                raise LoadGeneratorError(f"{target.name} at {target.address}: {message['error']}")
            slowest = max(slowest, message["latency_s"])
        return slowest

    def closed_loop(self, target: Target, concurrency: int, windows: Windows) -> dict[str, Any]:
        """One closed-loop point: ``concurrency`` callers in all, each waiting for its answer before the next send."""
        shares = [concurrency // self.workers + (i < concurrency % self.workers) for i in range(self.workers)]
        return self._measure(target, "closed", concurrency, shares, windows)

    def open_loop(self, target: Target, rate: float, windows: Windows) -> dict[str, Any]:
        """One open-loop point: ``rate`` requests/s in all on a fixed schedule."""
        return self._measure(target, "open", rate, [rate / self.workers] * self.workers, windows)

    def _measure(
        self, target: Target, mode: str, load: float, shares: Sequence[float], settings: Windows
    ) -> dict[str, Any]:
        check_servers(self.servers)
        trees = {name: process_tree(pid) for name, pid in self.servers.items()}
        start_at = time.monotonic() + _STARTUP_MARGIN_S
        for index, (conn, share) in enumerate(zip(self._conns, shares, strict=True)):
            command = {"op": "run", "target": target, "mode": mode, "load": share, "start_at": start_at}
            command.update(windows=settings, phase=index / len(shares))
            conn.send(command)
        measure_start = start_at + settings.warmup_s
        _sleep_sync_until(measure_start)
        before = CpuSnapshot.take(trees)
        counts = self.counters() if self.counters else {}
        windows: list[WindowResult] = []
        label = f"{target.name} {mode} {'c=' if mode == 'closed' else 'rate='}{load:g}"
        measured = False
        try:
            for index in range(settings.max_windows):
                _sleep_sync_until(measure_start + (index + 1) * settings.window_s)
                after = CpuSnapshot.take(trees)
                server_cpu, busy_pct, busy_s = after.since(before)
                before = after
                counts_now = self.counters() if self.counters else {}
                counted = {name: counts_now[name] - counts[name] for name in counts}
                counts = counts_now
                messages = [
                    self._receive(conn, "window", settings.window_s + settings.timeout_s + 30.0) for conn in self._conns
                ]
                window = _merge_window(index, settings.window_s, messages, server_cpu, busy_pct, busy_s, counted)
                windows.append(window)
                self.log(
                    f"  {label} window {index + 1}: {window.throughput_rps:,.0f} req/s, "
                    f"p99 {window.histogram.percentile_us(99) / 1000:.2f} ms, machine {busy_pct:.0f}% busy, "
                    f"others {window.other_cpu_s / window.duration_s:.0%} of a CPU"
                )
                check_servers(self.servers)
                if converged([w.throughput_rps for w in windows], tolerance=settings.tolerance, last=settings.agreeing):
                    break
            measured = True
        finally:
            # Every run ends with "stop" and "done"; after a failure, without masking it.
            with contextlib.suppress(Exception) if not measured else contextlib.nullcontext():
                for conn in self._conns:
                    conn.send({"op": "stop"})
                for conn in self._conns:
                    self._receive(conn, "done", settings.timeout_s + 30.0)
        result = summarize(target, mode, load, windows, settings, self.workers)
        if not result["converged"]:
            self.log(
                f"  {label}: the last {settings.agreeing} windows still disagree by "
                f"{result['agreement']:.0%} after {len(windows)} windows; reported anyway"
            )
        return result


def _sleep_sync_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _merge_window(
    index: int,
    window_s: float,
    messages: Sequence[dict[str, Any]],
    server_cpu: dict[str, float],
    busy_pct: float,
    busy_s: float,
    counters: dict[str, float] | None = None,
) -> WindowResult:
    histogram: LatencyHistogram | None = None
    errors: dict[str, int] = {}
    for message in messages:
        part = LatencyHistogram.from_payload(message["histogram"])
        if histogram is None:
            histogram = part
        else:
            histogram.add(part)
        for code, count in message["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return WindowResult(
        index=index,
        duration_s=window_s,
        ok=sum(m["ok"] for m in messages),
        errors=errors,
        histogram=histogram if histogram is not None else LatencyHistogram(),
        server_cpu_s=server_cpu,
        loadgen_cpu_s=sum(m["cpu_s"] for m in messages),
        machine_busy_pct=busy_pct,
        machine_busy_s=busy_s,
        late_sends=sum(m["late"] for m in messages),
        max_send_lag_us=max((m["max_lag_us"] for m in messages), default=0),
        counters=dict(counters or {}),
    )
