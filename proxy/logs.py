"""Log records on one line each, as text or JSON, whatever a client sent.

``configure(level, "json")`` makes every record of the process one JSON
object per line with ``time``, ``level``, ``logger``, ``message`` and, where
the record is about a request, ``route``, ``request_id``, ``code`` and
``duration`` (seconds); ``"text"`` is the classic
``time LEVEL logger: message key=value ...`` line. Request records pass these
fields as ``extra=`` (see :func:`request_fields`).

A client chooses its route name, request id and tensor names, and they reach
log messages; in both formats every message, field and traceback is escaped
(``\\n``, ``\\x1b``, ...) and bounded (:mod:`switchyard.proxy.client_text`),
so no input writes a second, forged line or a megabyte record.

It owns the shape of a record, not what is logged or where it goes (stderr).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from switchyard.proxy.client_text import escaped

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

MAX_MESSAGE = 4096
"""Characters of a record's message (and of its traceback); more is cut, with the full length."""
MAX_FIELD = 256
"""Characters of one request field (route, request id)."""

_REQUEST_FIELDS = ("route", "request_id", "code", "duration")


def request_fields(route: str, request_id: str, code: str, duration_s: float) -> dict[str, Any]:
    """The ``extra=`` of a record about one request."""
    return {"route": route, "request_id": request_id, "code": code, "duration": round(duration_s, 6)}


def _field(value: object) -> object:
    if isinstance(value, str):
        return escaped(value, MAX_FIELD)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return escaped(str(value), MAX_FIELD)


def _time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class _OneLine(logging.Formatter):
    def __init__(self, process_name: str = "") -> None:
        super().__init__()
        self.process_name = process_name

    def parts(self, record: logging.LogRecord) -> tuple[str, dict[str, object], str]:
        """The escaped message, the request fields present, and the escaped traceback (or "")."""
        message = escaped(record.getMessage(), MAX_MESSAGE)
        fields = {name: _field(getattr(record, name)) for name in _REQUEST_FIELDS if hasattr(record, name)}
        trace = ""
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            trace = escaped(record.exc_text, MAX_MESSAGE)
        return message, fields, trace


class TextFormatter(_OneLine):
    """``2026-01-01T00:00:00.000Z INFO logger: message route=... request_id=...``: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, trace = self.parts(record)
        name = f"{self.process_name} {record.name}" if self.process_name else record.name
        line = f"{_time(record.created)} {record.levelname} {name}: {message}"
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if trace:
            line += f" | {trace}"
        return line


class JsonFormatter(_OneLine):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields, trace = self.parts(record)
        out: dict[str, object] = {
            "time": _time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if self.process_name:
            out["process"] = self.process_name
        out.update(fields)
        if trace:
            out["exception"] = trace
        return json.dumps(out, ensure_ascii=False)


def formatter(log_format: LogFormat, process_name: str = "") -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter(process_name)
    if log_format == "text":
        return TextFormatter(process_name)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def configure(level: str, log_format: LogFormat, *, process_name: str = "") -> None:
    """Every record of the process at ``level`` and above to stderr, one line each in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, process_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
