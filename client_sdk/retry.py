"""Deadlines and retry decisions, shared by the sync and asyncio clients.

Owns :class:`RetryPolicy` (how many attempts, exponential backoff with full
jitter), :class:`Deadline` (one overall budget per call, measured with
``time.monotonic``) and :class:`RetrySchedule`, which decides after each failed
attempt whether to try again and after how long. Only ``UNAVAILABLE`` is
retried, only for idempotent calls, and never past the call's deadline: each
attempt gets the time that remains. This module never sleeps or calls gRPC;
the clients do, each in its own style.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Codes that mean "the request did not run; try again" (the contract's UNAVAILABLE)."""

Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls that fail with ``UNAVAILABLE``.

    Before retry ``n`` (1 for the first retry) the client waits a random time
    in ``[0, min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))]``
    ("full jitter", so clients that failed together do not retry together);
    with ``jitter=False`` it waits the upper bound exactly.
    """

    max_attempts: int = 3
    """Attempts in all, the first included; 1 disables retries."""
    initial_backoff_s: float = 0.05
    """Upper bound of the wait before the first retry."""
    max_backoff_s: float = 1.0
    """Largest upper bound of any wait."""
    multiplier: float = 2.0
    """Growth of the upper bound from one retry to the next."""
    jitter: bool = True
    """Draw each wait uniformly below its bound (full jitter) rather than waiting the bound."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not self.initial_backoff_s > 0:
            raise ValueError(f"initial_backoff_s must be > 0, got {self.initial_backoff_s!r}")
        if not self.max_backoff_s >= self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s must be >= initial_backoff_s ({self.initial_backoff_s!r}), got {self.max_backoff_s!r}"
            )
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")

    def backoff_bound_s(self, retry: int) -> float:
        """Upper bound of the wait before retry number ``retry`` (1-based)."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1-based)."""
        bound = self.backoff_bound_s(retry)
        return rng.uniform(0.0, bound) if self.jitter else bound


DEFAULT_RETRY_POLICY = RetryPolicy()


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``timeout`` itself, after checking it is a positive number of seconds or None."""
    if timeout is not None and not timeout > 0:
        raise ValueError(f"{name} must be > 0 seconds or None, got {timeout!r}")
    return timeout


class Deadline:
    """The moment a call must be over, as a budget that shrinks while it runs."""

    def __init__(self, timeout: float | None, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._expires_at = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        """Seconds left (0.0 once past), or None for a call without deadline."""
        if self._expires_at is None:
            return None
        return max(0.0, self._expires_at - self._clock())


class CallPolicy:
    """A client's defaults for its calls: the timeout when a call names none, and the retry policy."""

    def __init__(self, default_timeout: float | None, retries: RetryPolicy | None) -> None:
        self.default_timeout = check_timeout(default_timeout, "default_timeout")
        self.retries = retries
        self._rng = random.Random()

    def deadline(self, timeout: float | None) -> Deadline:
        """The deadline of a call started now: ``timeout`` if given, else the default."""
        return Deadline(self.default_timeout if timeout is None else check_timeout(timeout))

    def schedule(self, timeout: float | None, *, idempotent: bool) -> RetrySchedule:
        """The attempts of one call; a non-idempotent call gets exactly one."""
        return RetrySchedule(self.retries if idempotent else None, self.deadline(timeout), self._rng)


class RetrySchedule:
    """The attempts of one logical call: the timeout of each, and whether to retry.

    Usage, in either client::

        schedule = RetrySchedule(policy, Deadline(timeout), rng)
        while True:
            try:
                return call(timeout=schedule.timeout())
            except grpc.RpcError as error:
                delay = schedule.retry_after(error.code())
                if delay is None:
                    raise
            sleep(delay)
    """

    def __init__(self, policy: RetryPolicy | None, deadline: Deadline, rng: random.Random) -> None:
        self._policy = policy
        self._deadline = deadline
        self._rng = rng
        self.attempt = 1
        """Number of the attempt in progress (1-based)."""

    def timeout(self) -> float | None:
        """The timeout for the next attempt: whatever remains of the deadline."""
        return self._deadline.remaining()

    def retry_after(self, code: grpc.StatusCode) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or None to give up."""
        policy = self._policy
        if policy is None or code not in RETRYABLE_CODES or self.attempt >= policy.max_attempts:
            return None
        delay = policy.backoff_s(self.attempt, self._rng)
        remaining = self._deadline.remaining()
        if remaining is not None and delay >= remaining:
            # The next attempt could not start before the deadline; report the
            # real failure rather than a DEADLINE_EXCEEDED of our making.
            return None
        self.attempt += 1
        return delay
