"""Text a client sent, made safe to show: in a status message, in a log record.

A client chooses its route name, request id, tensor names and the rest; any
of them can be a megabyte long or hold a newline. Shown as they are, a long
one makes a status message larger than gRPC's metadata limit (the client then
sees ``RESOURCE_EXHAUSTED: received metadata size exceeds hard limit`` instead
of the real error) and a newline writes a second, forged line into a text
log. Everything here bounds first (a prefix, an ellipsis and the full length)
and escapes what is not printable, so the result is one short line.

It owns the shape of client text in messages, not where messages go
(``proxy.errors`` bounds every status message with :func:`bounded`,
``proxy.logs`` every log field with :func:`escaped`).
"""

from __future__ import annotations

MAX_SHOWN = 64
"""Characters of one client string shown in a message (a route name, a tensor name, ...)."""

MAX_MESSAGE = 1024
"""Characters of a whole status message; more is cut (a last resort: each client string is cut first)."""


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` quoted as ``repr`` does, cut to ``limit`` characters: ``'abc…' (1048576 characters)`` when longer."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '…'!r} ({len(text)} characters)"


def escaped(text: str, limit: int) -> str:
    """``text`` on one line: non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u2028``), cut to ``limit``.

    Printable text, non-ASCII letters included, stays as it is; a backslash
    is doubled only where the text needs escaping, so the result reads the
    same as the input in the common case.
    """
    cut = text if len(text) <= limit else text[:limit]
    if not cut.isprintable():
        cut = cut.encode("unicode_escape").decode("ascii") if cut.isascii() else _escape(cut)
    if len(text) > limit:
        return f"{cut}… ({len(text)} characters)"
    return cut


def _escape(text: str) -> str:
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in text)


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """A status message no longer than about ``limit`` characters: cut, with an ellipsis and its full length."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}… ({len(message)} characters)"
