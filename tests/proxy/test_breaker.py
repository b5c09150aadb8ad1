"""The circuit breaker's states and the retry budget's bound, on a fake clock."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from switchyard.proxy.backend.breaker import CircuitBreaker, CircuitOpen, CircuitState
from switchyard.proxy.backend.retry import RetryBudget
from switchyard.proxy.errors import BackendUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("switchyard_backend_circuit_open", {"endpoint": name})


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("triton:1", failure_threshold=3, cooldown_s=0.5, max_cooldown_s=2.0, clock=clock)
    seen: list[CircuitState] = []
    breaker.add_listener(seen.append)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # an answer resets the count: failures must be consecutive
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.closed and _gauge("triton:1") == 0
    breaker.check()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and seen == [CircuitState.OPEN]
    assert _gauge("triton:1") == 1
    clock.now += 0.2
    with pytest.raises(CircuitOpen) as info:
        breaker.check()
    assert isinstance(info.value, BackendUnavailable) and info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "Triton at triton:1 is down; retrying in 0.3 s"


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("triton:2", failure_threshold=1, cooldown_s=0.5, max_cooldown_s=1.0, clock=clock)
    breaker.record_failure()
    assert not breaker.begin_probe(), "no probe before the cool-down"
    clock.now += 0.5
    assert breaker.begin_probe()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.begin_probe(), "only one probe at a time"
    with pytest.raises(CircuitOpen) as info:
        breaker.check()  # calls still fail fast while the probe runs
    assert info.value.message == "Triton at triton:2 is down; retrying now"
    breaker.probe_failed()
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_in() == pytest.approx(1.0)  # the cool-down doubled
    clock.now += 1.0
    assert breaker.begin_probe()
    breaker.probe_failed()
    assert breaker.retry_in() == pytest.approx(1.0)  # ... up to max_cooldown_s
    clock.now += 1.0
    assert breaker.begin_probe()
    breaker.probe_succeeded()
    assert breaker.closed and _gauge("triton:2") == 0
    breaker.check()
    breaker.record_failure()  # opens again with the base cool-down
    assert breaker.retry_in() == pytest.approx(0.5)


def test_failures_of_calls_from_before_the_opening_do_not_reset_anything() -> None:
    clock = Clock()
    breaker = CircuitBreaker("triton:3", failure_threshold=1, cooldown_s=0.5, clock=clock)
    breaker.record_failure()
    breaker.record_success()  # a call that started before the circuit opened
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and breaker.retry_in() == pytest.approx(0.5)


def test_retry_budget_bounds_retries_to_a_fraction_of_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_s=2.0, max_tokens=10.0, clock=clock)
    retries = 0
    for _ in range(1000):  # 1000 failing calls in 1 s, each wanting a retry
        budget.deposit()
        retries += budget.try_spend()
        clock.now += 0.001
    assert retries <= 0.1 * 1000 + 2.0 * 1 + 10
    assert retries >= 0.1 * 1000  # ... but the budget does allow its share


def test_retry_budget_floor_refills_with_time() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, min_per_s=2.0, max_tokens=2.0, clock=clock)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    clock.now += 0.5
    assert budget.try_spend()
    assert not budget.try_spend()
