"""Waiting on a condition with a bound, for tests that watch a process recover or a counter move."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str = "condition") -> float:
    """Polls ``predicate`` until it holds and returns the seconds that took; AssertionError past ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - started
