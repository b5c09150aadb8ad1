"""scripts/requirements.py: the requirements of extras, with the package's own extras expanded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/requirements.py", *extras], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_own_extras_are_expanded_never_named() -> None:
    lines = run("triton", "batch").stdout.splitlines()
    names = {line.split("[")[0].split("=")[0].split(">")[0].split("<")[0] for line in lines}
    assert {"grpcio", "tritonclient", "nvidia-pytriton", "uvloop", "pyarrow"} <= names
    assert not [line for line in lines if line.startswith("switchyard")]
    assert len(lines) == len(set(lines))


def test_an_unknown_extra_is_refused_by_name() -> None:
    done = run("nope")
    assert done.returncode != 0 and "no extra 'nope'" in done.stderr
