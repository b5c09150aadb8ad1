"""Client text over real gRPC: a megabyte name or a forged request id gets its own status, one bounded log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from switchyard.proxy import logs
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread

pytestmark = pytest.mark.integration

HUGE = "r" * (1 << 20)
FORGED = "abc\n2026-01-01T00:00:00.000Z INFO switchyard.proxy: forged"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The gateway's records, as ``--log-format json`` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    logger = logging.getLogger("switchyard")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_megabyte_route_name_is_not_found_with_a_bounded_message(
    gateway_stub: gateway_pb2_grpc.GatewayStub, json_log: io.StringIO
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Infer(pb.InferRequest(route=HUGE), timeout=30)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "route: no route named '" + "r" * 64 + "…' (1048576 characters)"
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.GetRoute(pb.GetRouteRequest(name=HUGE), timeout=30)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert len(info.value.details()) < 200
    for record in records(json_log):
        assert len(json.dumps(record)) < logs.MAX_MESSAGE + 4 * logs.MAX_FIELD


def test_megabyte_model_name_over_oip_is_not_found(gateway_thread: GatewayThread) -> None:
    with grpc.insecure_channel(gateway_thread.target, options=channel_options()) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(service_pb2.ModelInferRequest(model_name=HUGE), timeout=30)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "model_name: no route named '" + "r" * 64 + "…' (1048576 characters)"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=HUGE), timeout=30)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert len(info.value.details()) < 200


@pytest.mark.parametrize(
    ("request_id", "reason"),
    [
        (FORGED, "character 3 ('\\n') is not printable; use printable characters"),
        ("x" * 129, "is 129 bytes long, at most 128"),
        ("i" * (1 << 20), "is 1048576 bytes long, at most 128"),
    ],
)
def test_bad_request_id_is_invalid_argument_and_one_log_line(
    gateway_stub: gateway_pb2_grpc.GatewayStub, json_log: io.StringIO, request_id: str, reason: str
) -> None:
    request = pb.InferRequest(
        route="digits", request_id=request_id, inputs=[from_numpy("image", np.zeros((1, 64), np.float32))]
    )
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Infer(request, timeout=30)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"request_id: {reason}"
    lines = json_log.getvalue().splitlines()
    (record,) = (json.loads(line) for line in lines if "request_id" in line)
    assert record["code"] == "INVALID_ARGUMENT" and record["route"] == "digits"
    assert isinstance(record["request_id"], str) and "\n" not in record["request_id"]
    assert len(record["request_id"]) <= logs.MAX_FIELD + 30
    assert len(lines[-1]) < 1000
