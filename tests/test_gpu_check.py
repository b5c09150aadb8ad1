"""scripts/gpu_check.sh on a machine without a GPU: a clear message and exit 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_gpu_the_check_says_so_and_passes(tmp_path: Path) -> None:
    # An nvidia-smi that finds no device, as on a machine with the tools but no GPU.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "no GPU here" in done.stdout


def test_the_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
