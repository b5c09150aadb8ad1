"""Smoke test of benchmarks/patterns.py: every comparison runs and is reported. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _row(path: str, load: float, number: int, rps: float, p50: float, base: tuple[float, float]) -> dict[str, Any]:
    return {
        "comparison": "default_batching",
        "path": path,
        "mode": "closed",
        "load": load,
        "round": number,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50},
        "vs_first": round(rps / base[0], 3),
        "p50_vs_first": round(p50 / base[1], 3),
        "converged": True,
    }


def test_default_batching_summary_takes_medians_of_ratios_and_checks_the_targets() -> None:
    from benchmarks.patterns import default_batching_summary, default_batching_table

    rows = []
    # c=1: p50 4% then 8% higher (median 6%: missed); c=2: 2% and 4% (met); c=8: throughput 1.2 and 0.9 (1.05: met).
    for load, pairs in ((1, [(1.0, 1.04), (1.0, 1.08)]), (2, [(1.0, 1.02), (1.0, 1.04)]), (8, [(1.2, 1.0), (0.9, 1)])):
        for number, (rps_ratio, p50_ratio) in enumerate(pairs, start=1):
            rows.append(_row("batching_off", load, number, 1000.0, 2.0, (1000.0, 2.0)))
            rows.append(_row("default", load, number, 1000.0 * rps_ratio, 2.0 * p50_ratio, (1000.0, 2.0)))
    summary = {row["load"]: row for row in default_batching_summary(rows)}
    assert summary[1]["p50_ratio"] == {"median": 1.06, "min": 1.04, "max": 1.08} and not summary[1]["met"]
    assert summary[2]["met"] and summary[2]["target"] == "p50 × ≤ 1.05"
    assert summary[8]["throughput_ratio"]["median"] == 1.05 and summary[8]["met"]
    assert summary[8]["throughput_rps_off"] == {"median": 1000.0, "min": 1000.0, "max": 1000.0}
    table = default_batching_table(list(summary.values()))
    assert "| 1 | 2 | 2.00 | 2.12 (2.08–2.16) | 1.06 (1.04–1.08) |" in table and "missed" in table
    assert "req/s × > 1 met" in table


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
def test_patterns_smoke_measures_every_comparison(tmp_path: Path) -> None:
    from benchmarks.patterns import COMPARISONS

    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.patterns", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    (report_path,) = tmp_path.glob("patterns-smoke-*.json")
    report = json.loads(report_path.read_text())
    assert (tmp_path / report["files"]["markdown"]).is_file()

    rows = {(row["comparison"], row["path"]): row for row in report["comparison"] if row["mode"] == "closed"}
    expected = {(comparison.name, case.name) for comparison in COMPARISONS for case in comparison.paths}
    assert set(rows) == expected
    # The batching comparison is measured in open loop too, at the smoke rate, every path at it.
    opened = [row for row in report["comparison"] if row["mode"] == "open"]
    assert {(row["comparison"], row["path"], row["load"]) for row in opened} == {
        ("batching", case.name, 50.0) for case in next(c for c in COMPARISONS if c.name == "batching").paths
    }
    for row in opened:
        assert row["throughput_rps"] > 0 and row["errors"] == {}, row
    assert "| batching | 50/s open | batched_eager2" in completed.stdout
    for row in rows.values():
        assert row["throughput_rps"] > 0 and row["errors"] == {}, row
        # Triton's statistics were read at every window boundary, so each row has its per-1000 counts.
        assert row["triton_requests_per_1000"] is not None and row["triton_executions_per_1000"] is not None
        assert row["gateway_cpu_us_per_request"] is not None
    # A cache hit never reaches Triton; a bypassed cache always does (counts, not timings).
    assert rows[("cache", "cache_hit")]["triton_requests_per_1000"] < 100
    assert rows[("cache", "cache_miss")]["triton_requests_per_1000"] > 500
    assert "| stream | c=4 | stream" in completed.stdout
    # The default route against batching = false: one line per concurrency (the smoke profile's highest only).
    assert [row["load"] for row in report["default_batching"]] == [4.0]
    assert "| 4 | 1 |" in completed.stdout
