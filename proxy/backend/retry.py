"""Retry budget for backend calls: retries stay a small fraction of calls.

A token bucket: every call deposits ``ratio`` tokens (0.1: one retry per ten
calls), time adds ``min_per_s`` tokens a second (the floor, so a quiet
gateway may still retry), the bucket holds at most ``max_tokens``, and a retry
spends one token. Over any stretch of time, retries are therefore at most
``ratio`` × calls + ``min_per_s`` × seconds + ``max_tokens``: an outage cannot
multiply the load on the backend, however many calls fail.

Retries sent and retries not sent (and why) are counted in
``switchyard_backend_retries_total{endpoint}`` and
``switchyard_backend_retries_skipped_total{endpoint,reason}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from switchyard.proxy.checks import at_least

RETRIES = Counter(
    "switchyard_backend_retries",
    "Backend calls sent again after UNAVAILABLE, by endpoint (host:port).",
    ["endpoint"],
)
RETRIES_SKIPPED = Counter(
    "switchyard_backend_retries_skipped",
    "Backend calls that failed with UNAVAILABLE and were not retried, by endpoint and reason "
    "(budget: retry budget spent; deadline: too little time left; circuit: circuit open; "
    "unsafe: the request may have reached a non-idempotent route's model; attempts: already retried; "
    "pool: left to the pool, which sends it to another endpoint).",
    ["endpoint", "reason"],
)


@dataclass(eq=False, kw_only=True)
class RetryBudget:
    """Token bucket bounding retries to ``ratio`` of calls plus ``min_per_s`` a second."""

    ratio: float = 0.1
    """Tokens each call deposits: the share of calls that may be retried."""
    min_per_s: float = 2.0
    """Tokens added each second whatever the traffic: retries a quiet process may still make."""
    max_tokens: float = 10.0
    """The most tokens the bucket holds: the largest burst of retries."""
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        at_least("ratio", self.ratio, 0)
        at_least("min_per_s", self.min_per_s, 0)
        at_least("max_tokens", self.max_tokens, 1)
        self._tokens = self.max_tokens
        self._updated = self.clock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def deposit(self) -> None:
        """One call was made (its first attempt)."""
        if self._tokens >= self.max_tokens:
            return  # full: neither the deposit nor the time since the last refill can add anything
        self._refill()
        self._tokens = min(self._tokens + self.ratio, self.max_tokens)

    def try_spend(self) -> bool:
        """Takes the token of one retry; False when the budget is spent."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self) -> None:
        now = self.clock()
        elapsed = now - self._updated
        self._updated = now
        if elapsed > 0:
            self._tokens = min(self._tokens + elapsed * self.min_per_s, self.max_tokens)
