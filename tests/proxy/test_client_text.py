"""Client text in messages and logs: bounded, escaped, one line."""

from __future__ import annotations

import pytest

from switchyard.proxy import errors
from switchyard.proxy.client_text import MAX_MESSAGE, bounded, escaped, shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("digits", "'digits'"),
        ("a\nb", "'a\\nb'"),
        ("x" * 64, repr("x" * 64)),
        ("x" * 65, "'" + "x" * 64 + "…' (65 characters)"),
        ("y" * 1_000_000, "'" + "y" * 64 + "…' (1000000 characters)"),
    ],
)
def test_shown(text: str, expected: str) -> None:
    assert shown(text) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("plain text, é and 中文", 100, "plain text, é and 中文"),
        ("C:\\path", 100, "C:\\path"),  # printable: left as it is
        ("line\nforged", 100, "line\\nforged"),
        ("cr\r\x1b[2J\t", 100, "cr\\r\\x1b[2J\\t"),
        ("é\nline", 100, "é\\nline"),
        ("sep\u2028x\x00", 100, "sep\\u2028x\\x00"),
        ("z" * 20, 8, "z" * 8 + "… (20 characters)"),
        ("\n" * 20, 8, "\\n" * 8 + "… (20 characters)"),
    ],
)
def test_escaped(text: str, limit: int, expected: str) -> None:
    assert escaped(text, limit) == expected


def test_escaped_is_one_printable_line() -> None:
    every_code_point_below_0x3000 = "".join(map(chr, range(0x3000)))
    out = escaped(every_code_point_below_0x3000, 1 << 20)
    assert out.isprintable()
    assert len(out.splitlines()) == 1


def test_bounded() -> None:
    assert bounded("short") == "short"
    cut = bounded("m" * 5000)
    assert cut == "m" * MAX_MESSAGE + "… (5000 characters)"


def test_every_gateway_error_message_is_bounded() -> None:
    assert len(errors.GatewayError("e" * 1_000_000).message) < MAX_MESSAGE + 40
    assert len(errors.InvalidInput("inputs", "r" * 1_000_000).message) < MAX_MESSAGE + 40
    assert (
        errors.RouteNotFound("n" * 1_000_000).message
        == "route: no route named '" + "n" * 64 + "…' (1000000 characters)"
    )
