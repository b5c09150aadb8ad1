"""Smoke test of benchmarks/oip.py: the OIP front and Triton measured with the same client code, ratio printed.

No timing is asserted: the smoke profile's points are far too short for their numbers to mean anything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.loadgen import Target
from benchmarks.oip import DIRECT, PATHS, compare, ratio_lines, ratios, target

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_oip_path_sends_the_same_request_bytes() -> None:
    requests = {name: target(name, "127.0.0.1:1", 1) for name in PATHS if name != "switchyard"}
    unary = {t.request_bytes() for t in requests.values() if t.protocol == "oip"}
    assert len(unary) == 1 and {t.protocol for t in requests.values()} == {"oip", "oip_stream"}
    assert target("switchyard", "127.0.0.1:1", 1).protocol == "switchyard"
    assert isinstance(requests["triton"], Target) and requests["triton"].model == requests["switchyard_oip"].model


def test_each_path_is_compared_with_its_direct_path_of_the_same_round() -> None:
    def point(name: str, rps: float, round_: int = 1) -> dict[str, object]:
        return {
            "target": name,
            "concurrency": 8,
            "round": round_,
            "throughput_rps": rps,
            "latency_ms": {"p50": rps / 100, "p99": 1.0},
            "cpu_us_per_request": {"triton": 100.0, "switchyard": 200.0},
            "loadgen": {"cpu_us_per_request": 50.0},
            "other_cpu_pct": 0.0,
            "errors": {},
            "converged": True,
        }

    rows = compare([point("triton", 1000), point("switchyard_oip", 800), point("triton", 500, 2)])
    assert [r["throughput_vs_direct"] for r in rows] == [1.0, 0.8, 1.0]
    assert rows[1]["gateway_cpu_us_per_request"] == 200.0 and rows[0]["gateway_cpu_us_per_request"] is None
    assert ratio_lines(ratios(rows)) == "c=8: switchyard_oip / triton = 0.80"
    assert DIRECT["switchyard_oip_stream"] == "triton_stream"


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
def test_oip_smoke_measures_the_front_and_triton_and_prints_the_ratio(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.oip", "--smoke", "--concurrency", "2", "--out", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-4000:]
    (report_path,) = tmp_path.glob("oip-smoke-*.json")
    report = json.loads(report_path.read_text())
    for name in report["files"].values():
        assert (tmp_path / name).is_file()
    rows = {row["target"]: row for row in report["comparison"]}
    assert set(rows) == set(PATHS)
    for row in rows.values():
        assert row["throughput_rps"] > 0 and row["errors"] == {}, row
        assert row["throughput_vs_direct"] is not None and row["triton_cpu_us_per_request"] is not None
    assert rows["triton"]["throughput_vs_direct"] == 1.0 and rows["triton_stream"]["throughput_vs_direct"] == 1.0
    oip = rows["switchyard_oip"]
    assert oip["throughput_vs_direct"] == round(oip["throughput_rps"] / rows["triton"]["throughput_rps"], 3)
    assert oip["gateway_cpu_us_per_request"] is not None
    assert f"c=2: switchyard_oip / triton = {oip['throughput_vs_direct']:.2f}" in completed.stdout
    assert "| c=2 | switchyard_oip" in completed.stdout
