"""Shared memory to Triton stays off when /dev/shm cannot hold the slots."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchyard.proxy.gateway import _shm_room


def test_room_for_the_slots_is_checked_before_shared_memory_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _shm_room(1024, str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="switchyard.proxy.gateway"):
        assert not _shm_room(1 << 62, str(tmp_path))
        assert not _shm_room(1024, str(tmp_path / "missing"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("the slots need" in m and "triton_shm_slots" in m for m in messages), messages
    assert any("cannot inspect" in m for m in messages), messages
