"""The one command that runs every benchmark (benchmarks/suite.py): its plan, its index, a real smoke run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import PARTS, Step, index_markdown, plan, run_steps

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_plan_runs_every_part_in_order_with_the_profile_and_driver(tmp_path: Path) -> None:
    steps = plan("short", PARTS, driver="h2load", out=tmp_path, peers_ready=True, python="py")
    assert [s.part for s in steps] == list(PARTS)
    for step in steps:
        assert step.command[:3] == ["py", "-m", f"benchmarks.{step.part}"]
        assert "--short" in step.command and step.command[step.command.index("--out") + 1] == str(tmp_path)
        assert ("--driver" in step.command) == (step.part in ("run", "oip", "peers"))
        assert step.skipped is None
    run, oip, features, patterns, peers, preprocess = steps  # short: only the loads the targets are judged at
    assert run.command[run.command.index("--concurrency") + 1] == "1,32"
    assert oip.command[oip.command.index("--concurrency") + 1] == "1,32"
    assert features.command[features.command.index("--concurrency") + 1] == "32"
    assert "--highest-load" in patterns.command
    assert peers.command[peers.command.index("--concurrency") + 1] == "32"
    assert preprocess.command[3:] == ["--out", str(tmp_path), "--short"]
    (smoke,) = plan("smoke", ["run"], driver="python", out=tmp_path, peers_ready=True)
    assert "--smoke" in smoke.command and "--concurrency" not in smoke.command
    full = plan("full", ["patterns"], driver="python", out=tmp_path, peers_ready=True)
    assert [s.part for s in full] == ["patterns"] and not any(
        a.startswith("--") and a != "--out" for a in full[0].command
    )


def test_peers_are_skipped_with_the_reason_when_their_environment_is_missing(tmp_path: Path) -> None:
    (peers,) = plan("smoke", ["peers"], driver="python", out=tmp_path, peers_ready=False)
    assert peers.skipped is not None and "--setup" in peers.skipped
    run_steps([peers], tmp_path, lambda message: None)
    assert peers.returncode is None and not peers.failed
    assert "Skipped: no peers' environment" in index_markdown([peers], tmp_path, "# t")


def test_unknown_parts_and_profiles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown parts"):
        plan("short", ["run", "nope"], driver="python", out=tmp_path, peers_ready=True)
    with pytest.raises(ValueError, match="unknown profile"):
        plan("long", ["run"], driver="python", out=tmp_path, peers_ready=True)


def test_a_failing_part_is_reported_and_the_next_still_runs(tmp_path: Path) -> None:
    writes = f"open({str(tmp_path / 'second.md')!r}, 'w').write('second table')"
    steps = [
        Step("first", [sys.executable, "-c", "import sys; sys.exit(3)"]),
        Step("second", [sys.executable, "-c", writes]),
    ]
    run_steps(steps, tmp_path, lambda message: None)
    assert steps[0].failed and steps[0].returncode == 3
    assert not steps[1].failed and steps[1].reports == ["second.md"]
    index = index_markdown(steps, tmp_path, "# t")
    assert "| first | failed |" in index and "| second | done |" in index and "second table" in index


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("pytriton") is None, reason="needs the triton extra")
def test_suite_smoke_runs_its_part_and_indexes_the_report(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--smoke", "--only", "triton_features", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    (index_json,) = tmp_path.glob("suite-smoke-*.json")
    index = json.loads(index_json.read_text())
    (part,) = index["parts"]
    assert part["part"] == "triton_features" and part["returncode"] == 0 and part["skipped"] is None
    assert any(name.startswith("triton-features-smoke-") and name.endswith(".json") for name in part["reports"])
    table = next(tmp_path / name for name in part["reports"] if name.endswith(".md")).read_text()
    markdown = index_json.with_suffix(".md").read_text()
    assert "| triton_features | done |" in markdown
    assert table.splitlines()[-1] in markdown  # the part's table is in the index
