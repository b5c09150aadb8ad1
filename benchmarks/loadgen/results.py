"""Measurement windows and results: the warm-up and window settings, when windows agree, one point's JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.loadgen.histogram import LatencyHistogram
from benchmarks.loadgen.target import Target

DEFAULT_TOLERANCE = 0.10
"""Windows agree when ``(max - min) / mean`` of their throughputs is at most this."""


@dataclass(frozen=True)
class Windows:
    """Warm-up and measurement windows of one point."""

    warmup_s: float = 3.0
    window_s: float = 5.0
    max_windows: int = 10
    tolerance: float = DEFAULT_TOLERANCE
    agreeing: int = 3
    """How many last windows must agree (and are reported)."""
    timeout_s: float = 10.0
    """Deadline of each call."""

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.warmup_s < 0:
            raise ValueError("window_s must be > 0 and warmup_s >= 0")
        if self.max_windows < self.agreeing or self.agreeing < 1:
            raise ValueError(f"max_windows ({self.max_windows}) must be at least agreeing ({self.agreeing}) >= 1")


def agreement(throughputs: Sequence[float]) -> float:
    """(max - min) / mean of ``throughputs``: 0 when they agree exactly (or are all zero)."""
    if not throughputs:
        return math.inf
    high, low = max(throughputs), min(throughputs)
    mean = sum(throughputs) / len(throughputs)
    return 0.0 if high == 0 else (high - low) / mean


def converged(throughputs: Sequence[float], *, tolerance: float = DEFAULT_TOLERANCE, last: int = 3) -> bool:
    """Whether the last ``last`` throughputs agree within ``tolerance``."""
    return len(throughputs) >= last and agreement(throughputs[-last:]) <= tolerance


@dataclass
class WindowResult:
    index: int
    duration_s: float
    ok: int
    errors: dict[str, int]
    histogram: LatencyHistogram
    server_cpu_s: dict[str, float]
    loadgen_cpu_s: float
    machine_busy_pct: float
    machine_busy_s: float = 0.0
    late_sends: int = 0
    max_send_lag_us: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    """Increase of each of the generator's ``counters`` over the window."""

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s

    @property
    def other_cpu_s(self) -> float:
        """CPU seconds the machine spent outside the servers and the load generator (other tenants, the kernel)."""
        return max(0.0, self.machine_busy_s - sum(self.server_cpu_s.values()) - self.loadgen_cpu_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "duration_s": round(self.duration_s, 4),
            "requests": self.ok,
            "throughput_rps": round(self.throughput_rps, 2),
            "errors": dict(self.errors),
            "latency_ms": self.histogram.summary_ms(),
            "server_cpu_s": {name: round(value, 3) for name, value in self.server_cpu_s.items()},
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 3),
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "other_cpu_pct": round(self.other_cpu_s / self.duration_s * 100, 1),
            "late_sends": self.late_sends,
            "max_send_lag_ms": round(self.max_send_lag_us / 1000.0, 3),
            "counters": dict(self.counters),
        }


def summarize(
    target: Target,
    mode: str,
    load: float,
    windows: Sequence[WindowResult],
    settings: Windows,
    workers: int,
) -> dict[str, Any]:
    """The JSON result of one point: every window, and the figures of the last ``settings.agreeing``."""
    used = list(windows[-settings.agreeing :])
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    for window in used:
        histogram.add(window.histogram)
        for code, count in window.errors.items():
            errors[code] = errors.get(code, 0) + count
    duration = sum(w.duration_s for w in used)
    ok = sum(w.ok for w in used)
    completed = ok + sum(errors.values())
    names = used[0].server_cpu_s if used else {}
    server_cpu = {name: sum(w.server_cpu_s.get(name, 0.0) for w in used) for name in names}
    loadgen_cpu = sum(w.loadgen_cpu_s for w in used)
    throughputs = [w.throughput_rps for w in windows]

    def per_request_us(cpu_s: float) -> float | None:
        return round(cpu_s / completed * 1e6, 1) if completed else None

    result: dict[str, Any] = {
        "target": target.name,
        "protocol": target.protocol,
        "address": target.address,
        "batch": target.batch,
        "mode": mode,
        "concurrency" if mode == "closed" else "rate_rps": load,
        "workers": workers,
        "converged": converged(throughputs, tolerance=settings.tolerance, last=settings.agreeing),
        "agreement": round(agreement(throughputs[-settings.agreeing :]), 4) if throughputs else None,
        "windows_measured": len(windows),
        "window_s": settings.window_s,
        "warmup_s": settings.warmup_s,
        "requests": ok,
        "throughput_rps": round(ok / duration, 2) if duration else 0.0,
        "latency_ms": histogram.summary_ms(),
        "histogram": histogram.kind,
        "errors": errors,
        "cpu_us_per_request": {name: per_request_us(cpu) for name, cpu in server_cpu.items()},
        "server_cpu_pct": {
            name: round(cpu / duration * 100, 1) if duration else 0.0 for name, cpu in server_cpu.items()
        },
        "loadgen": {
            "cpu_us_per_request": per_request_us(loadgen_cpu),
            "cpu_pct": round(loadgen_cpu / duration * 100, 1) if duration else 0.0,
        },
        "machine_busy_pct": round(sum(w.machine_busy_pct for w in used) / len(used), 1) if used else 0.0,
        "other_cpu_pct": round(sum(w.other_cpu_s for w in used) / duration * 100, 1) if duration else 0.0,
        "windows": [w.to_json() for w in windows],
    }
    counter_names = used[0].counters if used else {}
    if counter_names:
        totals = {name: sum(w.counters.get(name, 0.0) for w in used) for name in counter_names}
        result["counters_per_request"] = {
            name: round(total / completed, 4) if completed else None for name, total in totals.items()
        }
    if mode == "open":
        result["late_sends"] = sum(w.late_sends for w in used)
        result["max_send_lag_ms"] = round(max((w.max_send_lag_us for w in used), default=0) / 1000.0, 3)
    return result
