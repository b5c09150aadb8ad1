"""Log records: one line each, as text or JSON, whatever a client sent."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from switchyard.proxy import logs

FORGED = "abc\n2026-01-01T00:00:00.000Z INFO switchyard: forged\r\x1b[2J\u2028"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    logger = logging.getLogger("switchyard.test_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    streams = {}
    for name in logs.LOG_FORMATS:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.formatter(name))
        logger.addHandler(handler)
        streams[name] = stream
    try:
        yield logger, streams
    finally:
        logger.handlers.clear()
        logger.propagate = True


def test_json_record_has_the_fields(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    logger.info("request %s failed", "r1", extra=logs.request_fields("digits", "r1", "NOT_FOUND", 0.0123456789))
    (line,) = streams["json"].getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["logger"] == "switchyard.test_logs"
    assert record["message"] == "request r1 failed"
    assert (record["route"], record["request_id"], record["code"], record["duration"]) == (
        "digits",
        "r1",
        "NOT_FOUND",
        0.012346,
    )
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-01-01T00:00:00.000Z")
    text = streams["text"].getvalue()
    assert text.endswith(
        "INFO switchyard.test_logs: request r1 failed route=digits request_id=r1 code=NOT_FOUND duration=0.012346\n"
    )


def test_client_text_cannot_forge_a_line(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    logger.info("request %s failed", FORGED, extra=logs.request_fields(FORGED, FORGED, "OK", 0.0))
    for name, stream in streams.items():
        out = stream.getvalue()
        assert out.count("\n") == 1, name
        assert len(out.splitlines()) == 1, name  # str.splitlines also splits on \r, \x1c-\x1e, \u2028 ...
        assert "\x1b" not in out, name
    record = json.loads(streams["json"].getvalue())
    assert record["request_id"] == "abc\\n2026-01-01T00:00:00.000Z INFO switchyard: forged\\r\\x1b[2J\\u2028"
    assert "request_id=abc\\n2026" in streams["text"].getvalue()


def test_huge_client_text_is_bounded(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    huge = "r" * 1_000_000
    logger.info("no route named %s", huge, extra=logs.request_fields(huge, "id", "NOT_FOUND", 0.0))
    for name, stream in streams.items():
        out = stream.getvalue()
        assert len(out) < logs.MAX_MESSAGE + logs.MAX_FIELD + 300, name
        assert "(1000000 characters)" in out, name
    record = json.loads(streams["json"].getvalue())
    assert record["route"] == "r" * logs.MAX_FIELD + "… (1000000 characters)"


def test_traceback_stays_on_the_line(captured: tuple[logging.Logger, dict[str, io.StringIO]]) -> None:
    logger, streams = captured
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("failed unexpectedly")
    for name, stream in streams.items():
        assert len(stream.getvalue().splitlines()) == 1, name
    record = json.loads(streams["json"].getvalue())
    assert record["exception"].startswith("Traceback (most recent call last):\\n")
    assert record["exception"].endswith(
        "ValueError: abc\\n2026-01-01T00:00:00.000Z INFO switchyard: forged\\r\\x1b[2J\\u2028"
    )
    assert " | Traceback (most recent call last):\\n" in streams["text"].getvalue()


def test_configure_replaces_the_root_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        logs.configure("warning", "json", process_name="worker-1")
        logging.getLogger("switchyard.x").info("hidden")
        logging.getLogger("switchyard.x").warning("shown")
        (line,) = stream.getvalue().splitlines()
        assert json.loads(line)["message"] == "shown"
        assert json.loads(line)["process"] == "worker-1"
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json, got 'xml'"):
        logs.formatter("xml")  # type: ignore[arg-type]
