"""Builds the project's wheel from a copy of the checkout, offline, for the packaging tests.

The copy holds the files git tracks or would track (ignored build output
left out), plus a planted ``triton_models/repository/``: what a checkout
holds after ``switchyard models build``, which must never reach a wheel.
The build uses this environment's setuptools (``--no-build-isolation``) and
no index, so it needs no network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLANTED = Path("triton_models/repository/digits_logreg/1/model.onnx")
"""A built model's file, planted in the copy: no wheel may carry it."""


def checkout_files() -> list[str]:
    """The checkout's files that git tracks or would track (none of the ignored build output)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


def build_wheel(work: Path) -> Path:
    """The wheel built from a copy of the checkout in ``work`` (with a model repository planted)."""
    source = work / "source"
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    planted = source / PLANTED
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"\0" * 1024)
    (planted.parent.parent / "config.pbtxt").write_text('name: "digits_logreg"\n')
    dist = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--wheel-dir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    (wheel,) = dist.glob("switchyard-*.whl")
    return wheel
