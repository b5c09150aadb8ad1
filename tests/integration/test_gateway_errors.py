"""Bad input over real gRPC: exact status, the field named, and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

IMAGE = np.zeros((2, 64), np.float32)
S = grpc.StatusCode


def req(**kw) -> pb.InferRequest:  # type: ignore[no-untyped-def]
    base = {"route": "digits", "inputs": [from_numpy("image", IMAGE)]}
    base.update(kw)
    return pb.InferRequest(**base)


def tensor(**kw) -> pb.Tensor:  # type: ignore[no-untyped-def]
    t = from_numpy("image", IMAGE)
    for k, v in kw.items():
        if k == "shape":
            del t.shape[:]
            t.shape.extend(v)
        else:
            setattr(t, k, v)
    return t


CASES = [
    ("unknown route", req(route="nope"), S.NOT_FOUND, "route"),
    ("empty route", req(route=""), S.NOT_FOUND, "route"),
    ("missing input", req(inputs=[]), S.INVALID_ARGUMENT, "inputs[image]"),
    (
        "extra input",
        req(inputs=[from_numpy("image", IMAGE), from_numpy("x", IMAGE)]),
        S.INVALID_ARGUMENT,
        "inputs[x].name",
    ),
    (
        "wrong datatype",
        req(inputs=[from_numpy("image", IMAGE.astype(np.float64))]),
        S.INVALID_ARGUMENT,
        "inputs[image].datatype",
    ),
    ("unknown datatype", req(inputs=[tensor(datatype="F32")]), S.INVALID_ARGUMENT, "inputs[image].datatype"),
    (
        "wrong rank",
        req(inputs=[from_numpy("image", IMAGE.reshape(2, 8, 8))]),
        S.INVALID_ARGUMENT,
        "inputs[image].shape",
    ),
    (
        "wrong dim",
        req(inputs=[from_numpy("image", np.zeros((2, 65), np.float32))]),
        S.INVALID_ARGUMENT,
        "inputs[image].shape[1]",
    ),
    ("byte length", req(inputs=[tensor(raw_data=b"\0" * 7)]), S.INVALID_ARGUMENT, "inputs[image].raw_data"),
    ("huge shape, tiny bytes", req(inputs=[tensor(shape=[1 << 40, 64])]), S.INVALID_ARGUMENT, "inputs[image].shape[0]"),
    (
        "empty batch",
        req(inputs=[from_numpy("image", np.zeros((0, 64), np.float32))]),
        S.INVALID_ARGUMENT,
        "inputs[image].shape[0]",
    ),
    (
        "batch above max",
        req(inputs=[from_numpy("image", np.zeros((65, 64), np.float32))]),
        S.INVALID_ARGUMENT,
        "inputs[image].shape[0]",
    ),
    ("unknown output", req(outputs=["logits"]), S.INVALID_ARGUMENT, "outputs[0]"),
    (
        "version pin of another model",
        req(model_versions={"wine_classifier": "1"}),
        S.INVALID_ARGUMENT,
        "model_versions[wine_classifier]",
    ),
    (
        "bad version string",
        req(model_versions={"digits_logreg": "v1"}),
        S.INVALID_ARGUMENT,
        "model_versions[digits_logreg]",
    ),
    (
        "request too large for the route",
        req(inputs=[from_numpy("image", np.zeros((64, 64 * 1024), np.float32))]),
        S.INVALID_ARGUMENT,
        "inputs",
    ),
]


@pytest.mark.parametrize(("case", "request_", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_status_and_field(
    gateway_stub: gateway_pb2_grpc.GatewayStub, case: str, request_: pb.InferRequest, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Infer(request_, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert (info.value.details() or "").startswith(field), info.value.details()
    # ...and the server is still serving.
    assert gateway_stub.Infer(req(), timeout=10).outputs


def test_message_over_transport_limit_is_resource_exhausted(gateway_thread, gateway_stub) -> None:  # type: ignore[no-untyped-def]
    limit = gateway_thread.gateway.settings.max_message_bytes
    big = np.zeros((1, limit // 4 + 16), np.float32)
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Infer(req(inputs=[from_numpy("image", big)]), timeout=10)
    assert info.value.code() == S.RESOURCE_EXHAUSTED
    assert gateway_stub.Infer(req(), timeout=10).outputs


def test_expired_deadline_is_deadline_exceeded(gateway_stub: gateway_pb2_grpc.GatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Infer(req(), timeout=0.0005)
    assert info.value.code() == S.DEADLINE_EXCEEDED
