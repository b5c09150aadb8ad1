"""benchmarks.tracing runs and prints the cost of tracing off and on."""

from __future__ import annotations

import pytest

from benchmarks import tracing as bench
from switchyard.proxy import tracing


def test_prints_off_and_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--number", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tracing off", "tracing on"]
    assert tracing.tracer is None  # left as it was
