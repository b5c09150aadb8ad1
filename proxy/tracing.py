"""OpenTelemetry traces of each call: off unless configured, and then one span per call and per stage.

A traced call is a ``switchyard.infer`` span (route, request id, status)
whose children are its stages: ``validate``, ``cache`` (a lookup, with
``switchyard.cache.hit``), ``pre``, each model step, ``post``, and under the
steps one ``triton.infer`` span per backend call (model, version, endpoint).
The parent is the caller's W3C ``traceparent`` (gRPC metadata) when it sends
one, and every backend call passes its own ``traceparent`` on to Triton, so
Triton's traces (``--trace-config``) join the same trace.

Tracing is off by default and then costs one global read per stage: no span,
no allocation. :func:`configure_from_env` turns it on when the standard
variables ask for an exporter (``OTEL_TRACES_EXPORTER=otlp``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
the OTLP exporter then reads the rest of ``OTEL_*`` itself (headers,
protocol, ``OTEL_SERVICE_NAME``, sampling). It needs the ``otel`` extra
(``pip install 'switchyard[otel]'``); tests call :func:`enable` with a
provider of their own.

It owns spans and their propagation, not what a stage does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc.aio
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

tracer: Tracer | None = None
"""The gateway's tracer; None while tracing is off (the default)."""
_owned: TracerProvider | None = None
"""The provider :func:`configure_from_env` made (shut down by :func:`disable`)."""

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_OFF: AbstractContextManager[None] = nullcontext()
"""What :func:`span` and :func:`incoming` return while tracing is off: one shared object, no allocation."""

MAX_ATTRIBUTE = 128
"""Characters of a client string kept as a span attribute."""

_EXPORTERS = ("otlp", "otlp_proto_grpc", "otlp_proto_http", "console")


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """Turns tracing on with the exporter the ``OTEL_*`` variables name; whether it is on.

    ``OTEL_TRACES_EXPORTER`` is ``otlp`` (gRPC, the default when only an
    endpoint is set), ``otlp_proto_http`` or ``console``. Without the
    ``otel`` extra it logs what to install and stays off.
    """
    if not wanted(environ):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OTEL_* asks for traces but OpenTelemetry is not installed: pip install 'switchyard[otel]'")
        return False
    name = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name not in _EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(_EXPORTERS)} or none, got {name!r}")
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    elif name == "otlp_proto_http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "switchyard")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    enable(provider)
    global _owned
    _owned = provider
    log.info("tracing on: spans exported by %s", name)
    return True


def enable(provider: TracerProvider) -> None:
    """Traces every call from now on into ``provider``'s processors."""
    global tracer
    tracer = provider.get_tracer("switchyard")


def disable() -> None:
    """Back to no tracing (spans still open end normally); a provider :func:`configure_from_env` made is shut down."""
    global tracer, _owned
    tracer = None
    if _owned is not None:
        _owned.shutdown()  # exports what is queued, stops the exporter's thread
        _owned = None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span named ``name`` under the current one, current while it runs; a shared no-op when tracing is off."""
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes)


def call_span(route: str, request_id: str) -> AbstractContextManager[Any]:
    """The ``switchyard.infer`` span of one call, under the caller's ``traceparent`` if :func:`incoming` set one."""
    if tracer is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    attributes = {"switchyard.route": route, "switchyard.request_id": request_id[:MAX_ATTRIBUTE]}
    return tracer.start_as_current_span("switchyard.infer", kind=SpanKind.SERVER, attributes=attributes)


def call_ended(code: str) -> None:
    """Records the call's status code on the current span; an error status unless OK."""
    if tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    current = trace.get_current_span()
    current.set_attribute("rpc.grpc.status_code", code)
    if code != "OK":
        current.set_status(Status(StatusCode.ERROR, code))


def backend_span(model: str, version: str, endpoint: str) -> AbstractContextManager[Any]:
    """The ``triton.infer`` span of one backend call (kind CLIENT)."""
    if tracer is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    attributes = {"switchyard.model": model, "switchyard.model_version": version, "server.address": endpoint}
    return tracer.start_as_current_span("triton.infer", kind=SpanKind.CLIENT, attributes=attributes)


def incoming(context: grpc.aio.ServicerContext[Any, Any]) -> AbstractContextManager[None]:
    """While it runs, the caller's ``traceparent`` (the call's gRPC metadata) is the parent of new spans."""
    if tracer is None:
        return _OFF
    metadata = context.invocation_metadata() or ()
    carrier = {key: value for key, value in metadata if key in (TRACEPARENT, TRACESTATE) and isinstance(value, str)}
    if not carrier:
        return _OFF
    return _attached(carrier)


@contextmanager
def _attached(carrier: dict[str, str]) -> Iterator[None]:
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def outgoing() -> tuple[tuple[str, str], ...] | None:
    """Metadata carrying the current span as ``traceparent`` to the next hop; None when tracing is off."""
    if tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return tuple(carrier.items()) or None


def set_attribute(key: str, value: str | int | float | bool) -> None:
    """Sets an attribute on the current span (nothing when tracing is off)."""
    if tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute(key, value)
