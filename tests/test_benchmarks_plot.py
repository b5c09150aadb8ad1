"""benchmarks.plot draws the results page's figures from small reports (JSON written here, as the commands write it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.patterns import default_batching_summary
from benchmarks.suite import Step, draw_figures

REPO_ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the bench extra")


def _run_row(target: str, load: int, rps: float, triton_us: float, proxy_us: float | None) -> dict[str, Any]:
    return {
        "mode": "closed",
        "load": load,
        "round": 1,
        "target": target,
        "throughput_rps": rps,
        "triton_cpu_us_per_request": triton_us,
        "proxy_cpu_us_per_request": proxy_us,
    }


def _patterns_row(path: str, load: int, number: int, rps: float, p50: float) -> dict[str, Any]:
    return {
        "comparison": "default_batching",
        "path": path,
        "mode": "closed",
        "load": load,
        "round": number,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50},
        "vs_first": round(rps / 1000.0, 3),
        "p50_vs_first": round(p50 / 4.0, 3),
        "converged": True,
    }


@pytest.fixture
def reports(tmp_path: Path) -> list[Path]:
    meta = {"command": "python -m benchmarks.run", "started": "2026-12-04T18:00:00+00:00", "machine": {"cpus": 2}}
    run_rows = [
        _run_row("triton", 1, 260.0, 1200.0, None),
        _run_row("floor", 1, 230.0, 1100.0, 850.0),
        _run_row("switchyard", 1, 210.0, 1150.0, 1200.0),
        _run_row("triton", 32, 4700.0, 210.0, None),
        _run_row("floor", 32, 1560.0, 370.0, 470.0),
        _run_row("switchyard", 32, 1400.0, 340.0, 610.0),
        _run_row("switchyard", 32, 1300.0, 350.0, 650.0) | {"round": 2},
        _run_row("cnn_triton", 32, 200.0, 9200.0, None),
        _run_row("cnn_switchyard", 32, 170.0, 8800.0, 2100.0),
    ]
    patterns_rows = []
    for load in (1, 2, 4, 8, 32):
        for number in (1, 2):
            patterns_rows.append(_patterns_row("batching_off", load, number, 1000.0, 4.0))
            patterns_rows.append(_patterns_row("default", load, number, 1000.0 + 20 * load, 4.0 + 0.01 * load))
    run_path, patterns_path = tmp_path / "run-smoke.json", tmp_path / "patterns-short.json"
    run_path.write_text(json.dumps({"meta": meta, "results": [], "comparison": run_rows}))
    patterns = {"meta": meta, "comparison": patterns_rows, "default_batching": default_batching_summary(patterns_rows)}
    patterns_path.write_text(json.dumps(patterns))
    return [run_path, patterns_path]


def test_plot_command_draws_every_figure_from_the_reports(tmp_path: Path, reports: list[Path]) -> None:
    out = tmp_path / "figures"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.plot", *map(str, reports), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names = {"throughput.png", "cpu_per_request.png", "batching.png"}
    assert {Path(line).name for line in done.stdout.split()} == names
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE


def test_plot_command_refuses_reports_without_figures(tmp_path: Path) -> None:
    empty = tmp_path / "preprocess.json"
    empty.write_text(json.dumps({"meta": {}, "rows": []}))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.plot", str(empty), "--out", str(tmp_path / "figures")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "none of the reports holds what a figure needs" in done.stderr


def test_the_suite_draws_the_figures_from_its_parts_reports(tmp_path: Path, reports: list[Path]) -> None:
    steps = [
        Step("run", [], returncode=0, reports=[reports[0].name]),
        Step("patterns", [], returncode=0, reports=[reports[1].name]),
    ]
    written = draw_figures(steps, tmp_path, "suite-smoke-20261204-180000", log=lambda message: None)
    assert sorted(path.name for path in written) == ["batching.png", "cpu_per_request.png", "throughput.png"]
    assert all(path.parent.name == "suite-smoke-20261204-180000-figures" for path in written)
