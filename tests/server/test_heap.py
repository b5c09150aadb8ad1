"""The serving process's garbage collector settings (``server.heap``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from switchyard.server import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_the_heap_and_keeps_the_thresholds() -> None:
    threshold = gc.get_threshold()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == threshold
