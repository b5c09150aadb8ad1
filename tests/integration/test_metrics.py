"""The Prometheus endpoint counts requests by route and code and times each stage."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_codes_and_stage_latencies(
    gateway_thread: GatewayThread, gateway_stub: gateway_pb2_grpc.GatewayStub
) -> None:
    port = gateway_thread.gateway.metrics_port
    assert port
    before = scrape(port)
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    for _ in range(3):
        gateway_stub.Infer(pb.InferRequest(route="digits_8x8", inputs=[from_numpy("image", images)]), timeout=10)
    with pytest.raises(grpc.RpcError):
        bad = np.zeros((3, 8, 8), dtype=np.float32)  # wrong datatype
        gateway_stub.Infer(pb.InferRequest(route="digits_8x8", inputs=[from_numpy("image", bad)]), timeout=10)
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("switchyard_requests_total", route="digits_8x8", code="OK") == 3
    assert delta("switchyard_requests_total", route="digits_8x8", code="INVALID_ARGUMENT") == 1
    assert delta("switchyard_request_latency_seconds_count", route="digits_8x8") == 4
    # Rows answered: 3 OK requests of 3 rows each; the refused request's rows do not count.
    assert delta("switchyard_rows_total", route="digits_8x8") == 9
    for stage in ("pre", "infer", "post"):
        assert delta("switchyard_stage_latency_seconds_count", route="digits_8x8", stage=stage) == 3, stage
    assert value(after, "switchyard_inflight_requests", route="digits_8x8") == 0
    assert value(after, "switchyard_backend_ready", route="digits_8x8") == 1
