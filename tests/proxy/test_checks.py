"""Constructor argument checks: one wording, naming the argument and the value given."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.proxy import checks


@pytest.mark.parametrize(
    ("check", "args", "message"),
    [
        (checks.at_least, ("max_batch", 0, 1), "max_batch must be >= 1, got 0"),
        (checks.at_least, ("max_cooldown_s", 0.5, 1.0), "max_cooldown_s must be >= 1, got 0.5"),
        (checks.above, ("lease_s", 0.0, 0), "lease_s must be > 0, got 0.0"),
        (checks.above_or_none, ("ttl_s", -1, 0), "ttl_s must be > 0 or None, got -1"),
    ],
)
def test_argument_checks_name_the_argument_and_the_value(check: Any, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        check(*args)
    assert str(info.value) == message


def test_argument_checks_accept_values_in_bounds() -> None:
    checks.at_least("n", 1, 1)
    checks.above("t", 0.1, 0)
    checks.above_or_none("ttl_s", None, 0)
