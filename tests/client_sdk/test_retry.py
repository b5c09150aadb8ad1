from __future__ import annotations

import random

import grpc
import pytest

from switchyard.client.retry import (
    CallPolicy,
    Deadline,
    RetryPolicy,
    RetrySchedule,
    check_timeout,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingRandom(random.Random):
    """Returns the top of the range and records every range asked for."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff_s, policy.max_backoff_s, policy.multiplier, policy.jitter) == (
        3,
        0.05,
        1.0,
        2.0,
        True,
    )


def test_backoff_bound_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.05, multiplier=2, max_backoff_s=1.0)
    bounds = [policy.backoff_bound_s(retry) for retry in range(1, 8)]
    assert bounds == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_without_jitter_the_wait_is_the_bound() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, multiplier=3, max_backoff_s=0.5, jitter=False)
    rng = RecordingRandom()
    assert [policy.backoff_s(retry, rng) for retry in (1, 2, 3)] == pytest.approx([0.1, 0.3, 0.5])
    assert rng.ranges == []


def test_full_jitter_draws_uniformly_between_zero_and_the_bound() -> None:
    policy = RetryPolicy(initial_backoff_s=0.05, multiplier=2, max_backoff_s=1.0)
    rng = RecordingRandom()
    for retry in (1, 2, 3):
        policy.backoff_s(retry, rng)
    assert [low for low, _ in rng.ranges] == [0.0, 0.0, 0.0]
    assert [high for _, high in rng.ranges] == pytest.approx([0.05, 0.1, 0.2])


def test_full_jitter_spreads_waits_over_the_whole_range() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=1.0)
    waits = [policy.backoff_s(1, random.Random(seed)) for seed in range(200)]
    assert all(0.0 <= wait <= 1.0 for wait in waits)
    assert min(waits) < 0.1 and max(waits) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1, got 0"),
        ({"max_attempts": 2.5}, "max_attempts must be an integer >= 1, got 2.5"),
        ({"max_attempts": True}, "max_attempts must be an integer >= 1, got True"),
        ({"initial_backoff_s": 0}, "initial_backoff_s must be > 0, got 0"),
        ({"max_backoff_s": 0.01}, r"max_backoff_s must be >= initial_backoff_s \(0.05\), got 0.01"),
        ({"multiplier": 0.5}, "multiplier must be >= 1, got 0.5"),
    ],
)
def test_invalid_policies_fail_with_exact_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeouts_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=rf"^timeout must be > 0 seconds or None, got {timeout}$"):
        check_timeout(timeout)
    with pytest.raises(ValueError, match=r"^default_timeout must be > 0 seconds or None"):
        CallPolicy(timeout, None)


def test_deadline_shrinks_and_stops_at_zero() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock)
    assert deadline.remaining() == pytest.approx(2.0)
    clock.now += 0.5
    assert deadline.remaining() == pytest.approx(1.5)
    clock.now += 10
    assert deadline.remaining() == 0.0
    assert Deadline(None, clock).remaining() is None


def schedule(policy: RetryPolicy | None, timeout: float | None, clock: FakeClock) -> RetrySchedule:
    return RetrySchedule(policy, Deadline(timeout, clock), RecordingRandom())


@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code is not grpc.StatusCode.UNAVAILABLE])
def test_only_unavailable_is_retried(code: grpc.StatusCode) -> None:
    attempts = schedule(RetryPolicy(), None, FakeClock())
    assert attempts.retry_after(code) is None
    assert attempts.retry_after(grpc.StatusCode.UNAVAILABLE) is not None


def test_retries_stop_after_max_attempts() -> None:
    attempts = schedule(RetryPolicy(max_attempts=3, jitter=False), None, FakeClock())
    delays = [attempts.retry_after(grpc.StatusCode.UNAVAILABLE) for _ in range(4)]
    assert delays == pytest.approx([0.05, 0.1, None, None])
    assert attempts.attempt == 3


def test_no_policy_means_one_attempt() -> None:
    assert schedule(None, None, FakeClock()).retry_after(grpc.StatusCode.UNAVAILABLE) is None


def test_each_attempt_gets_what_remains_of_the_deadline() -> None:
    clock = FakeClock()
    attempts = schedule(RetryPolicy(max_attempts=5, initial_backoff_s=0.1, jitter=False), 1.0, clock)
    assert attempts.timeout() == pytest.approx(1.0)
    clock.now += 0.3  # first attempt failed after 0.3 s
    assert attempts.retry_after(grpc.StatusCode.UNAVAILABLE) == pytest.approx(0.1)
    clock.now += 0.1  # the wait
    assert attempts.timeout() == pytest.approx(0.6)


def test_no_retry_when_the_wait_would_reach_the_deadline() -> None:
    clock = FakeClock()
    attempts = schedule(RetryPolicy(max_attempts=10, initial_backoff_s=0.2, jitter=False), 0.5, clock)
    clock.now += 0.1
    assert attempts.retry_after(grpc.StatusCode.UNAVAILABLE) == pytest.approx(0.2)  # 0.4 s remain
    clock.now += 0.2
    # The next wait (0.4 s) would end at or past the deadline (0.2 s remain): give up.
    assert attempts.retry_after(grpc.StatusCode.UNAVAILABLE) is None
    assert attempts.attempt == 2


def test_call_policy_uses_the_default_unless_the_call_names_a_timeout() -> None:
    calls = CallPolicy(30.0, RetryPolicy())
    assert calls.deadline(None).remaining() == pytest.approx(30.0, abs=0.5)
    assert calls.deadline(2.0).remaining() == pytest.approx(2.0, abs=0.5)
    assert CallPolicy(None, None).deadline(None).remaining() is None


def test_call_policy_gives_non_idempotent_calls_one_attempt() -> None:
    calls = CallPolicy(None, RetryPolicy())
    assert calls.schedule(None, idempotent=True).retry_after(grpc.StatusCode.UNAVAILABLE) is not None
    assert calls.schedule(None, idempotent=False).retry_after(grpc.StatusCode.UNAVAILABLE) is None
