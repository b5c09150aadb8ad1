"""Checks of constructor arguments: one wording for every bound, naming the argument and the value given.

``at_least("max_batch", 0, 1)`` raises ``ValueError("max_batch must be >= 1, got 0")``.
Settings and the routes file are checked by their pydantic schemas; these
guard the classes that code (and tests) build directly.
"""

from __future__ import annotations


def at_least(name: str, value: float, minimum: float) -> None:
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


def above(name: str, value: float, bound: float) -> None:
    if not value > bound:
        raise ValueError(f"{name} must be > {bound:g}, got {value!r}")


def above_or_none(name: str, value: float | None, bound: float) -> None:
    if value is not None and not value > bound:
        raise ValueError(f"{name} must be > {bound:g} or None, got {value!r}")
