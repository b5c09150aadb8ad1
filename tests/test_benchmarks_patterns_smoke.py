"""Smoke test of benchmarks/patterns.py: every comparison runs and is reported. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    assert "| batching | 50/s open | batched_eager2 |" in completed.stdout
    for row in rows.values():
        assert row["throughput_rps"] > 0 and row["errors"] == {}, row
        # Triton's statistics were read at every window boundary, so each row has its per-1000 counts.
        assert row["triton_requests_per_1000"] is not None and row["triton_executions_per_1000"] is not None
        assert row["gateway_cpu_us_per_request"] is not None
    # A cache hit never reaches Triton; a bypassed cache always does (counts, not timings).
    assert rows[("cache", "cache_hit")]["triton_requests_per_1000"] < 100
    assert rows[("cache", "cache_miss")]["triton_requests_per_1000"] > 500
    assert "| stream | c=4 | stream" in completed.stdout
