"""benchmarks.run's comparison: ratios within one round, and their medians and ranges over rounds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from benchmarks.common import PROFILES
from benchmarks.run import (
    TRITON_STREAM_MAX_CONCURRENCY,
    _measure_all,
    across_rounds,
    compare,
    floor_of,
    markdown_table,
    rounds_table,
)


def result(target: str, rps: float, round_number: int, *, concurrency: int = 32, p99: float = 10.0) -> dict[str, Any]:
    """A closed-loop result as the load generator reports it (only the fields the comparison reads)."""
    return {
        "target": target,
        "mode": "closed",
        "concurrency": concurrency,
        "round": round_number,
        "throughput_rps": rps,
        "latency_ms": {"p50": p99 / 2, "p90": p99 * 0.9, "p99": p99, "max": p99 * 2},
        "cpu_us_per_request": {"triton": 100.0, "floor": 200.0, "switchyard": 300.0},
        "loadgen": {"cpu_us_per_request": 50.0, "cpu_pct": 40.0},
        "machine_busy_pct": 90.0,
        "other_cpu_pct": 1.0,
        "errors": {},
        "windows_measured": 3,
        "converged": True,
    }


def test_floor_of_pairs_gateway_paths_with_the_floor_of_their_model() -> None:
    assert floor_of("switchyard_batched") == "floor" and floor_of("switchyard_batched_stream") == "floor"
    assert floor_of("cnn_switchyard_shm") == "cnn_floor"
    assert floor_of("triton") is None and floor_of("cnn_floor") is None and floor_of("echo") is None


def test_ratios_pair_points_of_the_same_round_and_load() -> None:
    results = [
        result("triton", 1000.0, 1),
        result("floor", 500.0, 1),
        result("switchyard_batched", 600.0, 1),
        result("triton", 2000.0, 2),  # a faster spell of the machine: every path of round 2 is faster
        result("floor", 1000.0, 2),
        result("switchyard_batched", 1500.0, 2),
        result("switchyard_batched", 100.0, 1, concurrency=8),  # no direct or floor point at c=8
    ]
    rows = compare(results)
    batched = [r for r in rows if r["target"] == "switchyard_batched"]
    assert [(r["round"], r["throughput_vs_direct"], r["throughput_vs_floor"]) for r in batched] == [
        (1, 0.6, 1.2),
        (2, 0.75, 1.5),
        (1, None, None),
    ]
    assert next(r for r in rows if r["target"] == "floor")["throughput_vs_floor"] is None
    assert "(round 2)" in markdown_table(rows)  # rows of several rounds say which
    assert "(round" not in markdown_table(compare(results[:3]))


def test_across_rounds_gives_median_and_range_of_each_ratio() -> None:
    results = []
    for round_number, (batched, p99) in enumerate([(1300.0, 30.0), (900.0, 50.0), (1100.0, 20.0)], start=1):
        results += [
            result("triton", 2000.0, round_number),
            result("floor", 1000.0, round_number),
            result("switchyard_batched", batched, round_number, p99=p99),
        ]
    summary = {row["target"]: row for row in across_rounds(compare(results))}
    batched = summary["switchyard_batched"]
    assert batched["rounds"] == 3
    assert batched["throughput_vs_floor"] == {"median": 1.1, "min": 0.9, "max": 1.3}
    assert batched["throughput_vs_direct"] == pytest.approx({"median": 0.55, "min": 0.45, "max": 0.65})
    assert batched["p99_ms"] == {"median": 30.0, "min": 20.0, "max": 50.0}
    assert summary["triton"]["throughput_vs_floor"] is None
    table = rounds_table(list(summary.values()))
    assert "| c=32 | switchyard_batched | 3 | 1,100 (900–1,300) | 0.55 (0.45–0.65) | 1.10 (0.90–1.30) |" in table


class _RecordingGenerator:
    """Stands in for the load generator: records the closed-loop points asked of it."""

    def __init__(self) -> None:
        self.points: list[tuple[str, int]] = []

    def closed_loop(self, target: Any, concurrency: int, windows: Any) -> dict[str, Any]:
        self.points.append((target, concurrency))
        return result(target, 100.0, 1, concurrency=concurrency)


def test_triton_stream_is_not_measured_where_it_crashes_triton() -> None:
    limit = TRITON_STREAM_MAX_CONCURRENCY
    profile = replace(PROFILES["smoke"], echo=False, rates=())
    points = [(name, c, profile.windows) for c in (limit, limit * 4) for name in ("triton_stream", "switchyard_stream")]
    generator, results = _RecordingGenerator(), []
    targets = {"triton_stream": "triton_stream", "switchyard_stream": "switchyard_stream"}
    _measure_all(generator, targets, points, 1, profile, "python", results, lambda message: None)
    assert generator.points == [
        ("triton_stream", limit),
        ("switchyard_stream", limit),
        ("switchyard_stream", limit * 4),
    ]
    rows = {(row["target"], row["load"]): row for row in compare(results)}
    assert rows[("switchyard_stream", limit)]["throughput_vs_direct"] == 1.0
    assert rows[("switchyard_stream", limit * 4)]["throughput_vs_direct"] is None  # no baseline, no ratio
