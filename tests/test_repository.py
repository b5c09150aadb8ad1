"""Repository hygiene: generated stubs are fresh, lint and strict typing pass, no machine-specific paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_generated_stubs_match_the_proto() -> None:
    done = run(sys.executable, "scripts/gen_protos.py", "--check")
    assert done.returncode == 0, done.stderr


def test_generator_detects_a_stale_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos
    finally:
        sys.path.pop(0)
    for name in gen_protos.committed():
        (tmp_path / name).write_text("stale\n")
    monkeypatch.setattr(gen_protos, "TARGET", tmp_path)
    assert gen_protos.main(["--check"]) == 1


def test_ruff_lint_and_format() -> None:
    lint = run(sys.executable, "-m", "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict() -> None:
    """Every package of ours type-checks under mypy --strict (settings in pyproject.toml)."""
    done = run(sys.executable, "scripts/typecheck.py")
    assert done.returncode == 0, done.stdout + done.stderr


# Absolute folders of a particular machine or user. Written as alternatives so
# that this file holds no such path itself and needs no exception.
MACHINE_PATH = re.compile(r"/(?:work|home|Users)/")


def test_no_machine_specific_paths() -> None:
    tracked = run("git", "ls-files").stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    offenders = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".onnx"}:
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    assert not offenders, offenders
