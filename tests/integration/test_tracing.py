"""Traces over real gRPC and a real Triton: one trace per call, its stages and backend calls as child spans."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from switchyard.proxy import tracing
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


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
        provider.shutdown()


def request_for(stub: gateway_pb2_grpc.GatewayStub, route: str, rows: int = 2) -> pb.InferRequest:
    info = stub.GetRoute(pb.GetRouteRequest(name=route), timeout=10)
    rng = np.random.default_rng(7)
    inputs = [
        from_numpy(spec.name, rng.random((rows, *(int(d) for d in spec.shape[1:])), dtype=np.float32))
        for spec in info.inputs
    ]
    return pb.InferRequest(route=route, inputs=inputs)


def tree(spans: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    """Each span's name -> the names of its children, in start order."""
    by_id = {s.context.span_id: s for s in spans}
    children: dict[str, list[str]] = {s.name: [] for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        if s.parent is not None and s.parent.span_id in by_id:
            children[by_id[s.parent.span_id].name].append(s.name)
    return children


def test_serial_route_is_one_trace_under_the_callers_traceparent(
    gateway_stub: gateway_pb2_grpc.GatewayStub, exported: InMemorySpanExporter
) -> None:
    request = request_for(gateway_stub, "wine_alcohol_by_cultivar")
    exported.clear()
    gateway_stub.Infer(request, timeout=30, metadata=(("traceparent", TRACEPARENT),))
    spans = exported.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}
    (root,) = (s for s in spans if s.name == "switchyard.infer")
    assert root.kind is SpanKind.SERVER
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_ID and root.parent.is_remote
    assert root.attributes is not None and root.attributes["switchyard.route"] == "wine_alcohol_by_cultivar"
    assert root.attributes["rpc.grpc.status_code"] == "OK"
    children = tree(spans)
    assert children["switchyard.infer"][0] == "validate"
    steps = [name for name in children["switchyard.infer"] if name.startswith("step")]
    assert steps == ["step:classify", "step:regress"], children
    backend = [s for s in spans if s.name == "triton.infer"]
    assert len(backend) >= 2
    for s in backend:
        assert s.kind is SpanKind.CLIENT
        assert s.attributes is not None and s.attributes["server.address"]
        assert str(s.attributes["switchyard.model"]).startswith("wine_")
        assert s.parent is not None and s.parent.span_id in {x.context.span_id for x in spans if x.name in steps}
    assert {str(s.attributes["switchyard.model"]) for s in backend if s.attributes} >= {"wine_classifier"}


def test_cached_hit_is_a_trace_without_a_backend_call(
    gateway_stub: gateway_pb2_grpc.GatewayStub, exported: InMemorySpanExporter
) -> None:
    request = request_for(gateway_stub, "digits_cached", rows=1)
    request.inputs[0].raw_data = np.full((1, 64), 3.0, np.float32).tobytes()
    gateway_stub.Infer(request, timeout=30)
    exported.clear()
    response = gateway_stub.Infer(request, timeout=30, metadata=(("traceparent", TRACEPARENT),))
    assert response.cached
    spans = exported.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}
    assert tree(spans)["switchyard.infer"] == ["validate", "cache"]
    (cache,) = (s for s in spans if s.name == "cache")
    assert cache.attributes is not None and cache.attributes["switchyard.cache.hit"] is True
    assert not [s for s in spans if s.name == "triton.infer"]


def test_a_call_without_traceparent_starts_its_own_trace(
    gateway_stub: gateway_pb2_grpc.GatewayStub, exported: InMemorySpanExporter
) -> None:
    request = request_for(gateway_stub, "wine")
    exported.clear()
    gateway_stub.Infer(request, timeout=30)
    spans = exported.get_finished_spans()
    (root,) = (s for s in spans if s.name == "switchyard.infer")
    assert root.parent is None
    assert len({s.context.trace_id for s in spans}) == 1


def test_failed_call_span_has_error_status(
    gateway_stub: gateway_pb2_grpc.GatewayStub, exported: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.RpcError):
        gateway_stub.Infer(pb.InferRequest(route="nope"), timeout=10)
    (root,) = exported.get_finished_spans()
    assert root.attributes is not None and root.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
    assert root.attributes["switchyard.route"] == "<unknown>"
    assert not root.status.is_ok


def test_progressive_route_is_one_trace_with_a_span_per_stage(
    gateway_stub: gateway_pb2_grpc.GatewayStub, exported: InMemorySpanExporter
) -> None:
    request = request_for(gateway_stub, "digits_progressive", rows=1)
    exported.clear()
    answers = list(gateway_stub.InferProgressive(request, timeout=30, metadata=(("traceparent", TRACEPARENT),)))
    assert answers[-1].final and answers[-1].stage == "accurate"  # "fast" is skipped when "accurate" is first
    spans = exported.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}
    (root,) = (s for s in spans if s.name == "switchyard.infer")
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes is not None and root.attributes["rpc.grpc.status_code"] == "OK"
    assert len([s for s in spans if s.name == "triton.infer"]) >= 1
    orphans = [s.name for s in spans if s is not root and (s.parent is None or s.parent.is_remote)]
    assert not orphans
