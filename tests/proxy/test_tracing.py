"""Tracing: off by default at no cost, on from OTEL_* variables, the traceparent passed on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from switchyard.proxy import tracing


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def test_off_by_default_shares_one_no_op() -> None:
    assert tracing.tracer is None
    assert tracing.span("pre") is tracing.span("post")
    assert tracing.call_span("r", "id") is tracing.span("pre")
    assert tracing.backend_span("m", "1", "host:8001") is tracing.span("pre")
    assert tracing.outgoing() is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_wanted_from_the_standard_variables(environ: dict[str, str], expected: bool) -> None:
    assert tracing.wanted(environ) is expected


def test_configure_from_env() -> None:
    try:
        assert tracing.configure_from_env({}) is False
        assert tracing.tracer is None
        assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "console"}) is True
        assert tracing.tracer is not None
        with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER must be one of otlp, .* got 'zipkin'"):
            tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    finally:
        tracing.disable()


def test_otlp_exporter_is_built() -> None:
    try:
        assert tracing.configure_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is True
    finally:
        tracing.disable()


def test_outgoing_carries_the_current_span(exported: InMemorySpanExporter) -> None:
    with tracing.backend_span("m", "1", "host:8001"):
        metadata = tracing.outgoing()
    (span,) = exported.get_finished_spans()
    assert metadata is not None
    (key, value), *_ = metadata
    assert key == "traceparent"
    assert value.startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_incoming_traceparent_is_the_parent(exported: InMemorySpanExporter) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with tracing.incoming(_Context((("user-agent", "x"), ("traceparent", parent)))):  # type: ignore[arg-type]
        with tracing.call_span("digits", "r" * 1000):
            pass
    (span,) = exported.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["switchyard.request_id"] == "r" * 128


def test_malformed_traceparent_starts_a_new_trace(exported: InMemorySpanExporter) -> None:
    with tracing.incoming(_Context((("traceparent", "00-zz\n-forged"),))):  # type: ignore[arg-type]
        with tracing.call_span("digits", "id"):
            pass
    (span,) = exported.get_finished_spans()
    assert span.parent is None
