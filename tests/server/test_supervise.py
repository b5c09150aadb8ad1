"""LocalTriton.supervise with stand-in binaries: it gives up after quick failures and ends with stop()."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from switchyard.server.local_triton import LocalTriton, TritonGaveUp, TritonInstallation


def _fake_triton(tmp_path: Path, script: str) -> LocalTriton:
    binary = tmp_path / "tritonserver"
    binary.write_text("#!/bin/sh\n" + script + "\n")
    binary.chmod(0o755)
    installation = TritonInstallation(
        binary=binary, libraries=tmp_path, python_backend=tmp_path, stub=tmp_path / "stub"
    )
    repository = tmp_path / "repository"
    repository.mkdir()
    return LocalTriton(repository, work_dir=tmp_path / "work", installation=installation)


async def test_gives_up_after_quick_failures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    triton = _fake_triton(tmp_path, "echo crashing; sleep 0.1; exit 3")
    restarts: list[int] = []
    await triton.start()
    started = time.monotonic()
    with pytest.raises(TritonGaveUp) as info:
        await triton.supervise(on_restart=restarts.append, backoff_s=0.01, max_quick_failures=3, ready_timeout_s=5)
    assert time.monotonic() - started < 5
    assert "failed 3 times in a row" in str(info.value) and "giving up" in str(info.value)
    assert "giving up" in caplog.text
    assert restarts == []
    assert not triton.running
    # Three starts: the first, then two restarts that never became ready.
    assert triton.log_path.read_text().count("crashing") == 3


async def test_stop_ends_supervision(tmp_path: Path) -> None:
    triton = _fake_triton(tmp_path, "exec sleep 30")
    await triton.start()
    supervisor = asyncio.create_task(triton.supervise(backoff_s=0.01))
    await asyncio.sleep(0.1)
    assert not supervisor.done()
    await triton.stop(grace_s=1)
    await asyncio.wait_for(supervisor, 2)
    assert not triton.running
