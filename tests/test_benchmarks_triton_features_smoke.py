"""Smoke test of benchmarks/triton_features.py: every Triton-side variant runs and is reported.

No timing is asserted: the smoke profile's points are far too short for their numbers to mean anything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.triton_features import VARIANTS, Variant, variant_config

REPO_ROOT = Path(__file__).resolve().parent.parent
VARIANT_MODELS = ("digits_logreg", "digits_logreg_nobatch", "digits_logreg_1inst", "digits_logreg_nobatch_1inst")


def test_variant_config_edits_only_batching_instances_and_name() -> None:
    from switchyard.models.build import MODELS, render_config

    config = render_config(next(spec for spec in MODELS if spec.name == "digits_logreg"))
    edited = variant_config(config, "digits_logreg_nobatch_1inst", Variant("_nobatch_1inst", False, 1))
    before, after = config.splitlines(), edited.splitlines()
    added = [line for line in after if line not in before]
    assert added == ['name: "digits_logreg_nobatch_1inst"', "  { count: 1, kind: KIND_CPU }"]
    removed = [line.strip().split(" ")[0] for line in before if line not in after]
    assert removed == ["name:", "dynamic_batching", "preferred_batch_size:", "max_queue_delay_microseconds:", "}", "{"]
    assert variant_config(config, "digits_logreg", VARIANTS[0]) == config


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
def test_triton_features_smoke_measures_every_variant(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.triton_features", "--smoke", "--out", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-4000:]
    (report_path,) = tmp_path.glob("triton-features-smoke-*.json")
    report = json.loads(report_path.read_text())
    for name in report["files"].values():
        assert (tmp_path / name).is_file()
    if importlib.util.find_spec("matplotlib") is not None:  # latency against throughput, as PNG
        assert (tmp_path / report["files"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = {row["model"]: row for row in report["comparison"]}
    assert set(rows) == set(VARIANT_MODELS)
    for row in rows.values():
        assert row["throughput_rps"] > 0 and row["errors"] == {}, row
        assert row["triton_cpu_us_per_request"] is not None and row["throughput_vs_default"] is not None
    assert rows["digits_logreg"]["throughput_vs_default"] == 1.0
    assert not rows["digits_logreg_nobatch_1inst"]["dynamic_batching"] and rows["digits_logreg_1inst"]["instances"] == 1
    # Without dynamic batching Triton executes every request on its own.
    assert rows["digits_logreg_nobatch"]["requests_per_execution"] == 1.0
    assert "| digits_logreg_nobatch_1inst" in completed.stdout
