"""Property-based fuzzing of the live gateway: malformed input never crashes it or yields UNKNOWN/INTERNAL.

Hypothesis generates requests that are mostly wrong in some way (unknown
routes and tensors, bad datatypes, absurd shapes, byte payloads that do not
match, bad BYTES lengths, odd version pins, long ids) plus raw bytes that are
not a valid protobuf message at all. Each must end with a clear status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .gateway_thread import GatewayThread

INPUT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
ROUTES = ["digits", "digits_8x8", "digits_png", "wine", "wine_alcohol_by_cultivar", "wine_profile", "nope", ""]
NAMES = ["image", "features", "png", "pixels", "", "x" * 300]
DATATYPES = ["FP32", "FP64", "UINT8", "INT64", "BYTES", "BOOL", "FP16", "fp32", "COMPLEX", ""]

codes: Counter[str] = Counter()


@pytest.fixture(scope="module")
def stub(gateway_thread: GatewayThread) -> Iterator[gateway_pb2_grpc.GatewayStub]:
    with grpc.insecure_channel(gateway_thread.target) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def shapes() -> st.SearchStrategy[list[int]]:
    dim = st.one_of(st.integers(-3, 70), st.sampled_from([2**31, 2**40, 2**62, -(2**62)]))
    return st.lists(dim, min_size=0, max_size=5)


@st.composite
def tensors(draw: st.DrawFn) -> pb.Tensor:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # a well-formed tensor of some route's shape, maybe with the wrong name
        rows = draw(st.integers(0, 3))
        cols = draw(st.sampled_from([64, 12, 63, 1]))
        array = np.asarray(
            draw(st.lists(st.floats(allow_nan=True, width=32), min_size=rows * cols, max_size=rows * cols))
        )
        tensor = from_numpy(draw(st.sampled_from(NAMES)), array.astype(np.float32).reshape(rows, cols))
        return tensor
    if kind == 1:  # BYTES with length prefixes that may lie
        chunks = draw(st.lists(st.binary(max_size=40), max_size=4))
        raw = b"".join(len(c).to_bytes(4, "little") + c for c in chunks)
        if draw(st.booleans()):
            raw = draw(st.binary(max_size=8)) + raw  # corrupt prefix
        return pb.Tensor(name=draw(st.sampled_from(NAMES)), datatype="BYTES", shape=[len(chunks)], raw_data=raw)
    # Arbitrary: any datatype, any shape, any bytes.
    return pb.Tensor(
        name=draw(st.sampled_from(NAMES)),
        datatype=draw(st.sampled_from(DATATYPES)),
        shape=draw(shapes()),
        raw_data=draw(st.binary(max_size=300)),
    )


@st.composite
def requests(draw: st.DrawFn) -> pb.InferRequest:
    return pb.InferRequest(
        route=draw(st.sampled_from(ROUTES)),
        request_id=draw(st.one_of(st.just(""), st.text(max_size=10), st.just("r" * 200))),
        inputs=draw(st.lists(tensors(), max_size=3)),
        outputs=draw(st.lists(st.sampled_from(["label", "probabilities", "alcohol", "x", ""]), max_size=3)),
        model_versions=draw(
            st.dictionaries(
                st.sampled_from(["digits_logreg", "wine_classifier", "zz"]), st.text(max_size=4), max_size=2
            )
        ),
        bypass_cache=draw(st.booleans()),
        data_key=draw(st.one_of(st.just(""), st.text(max_size=5), st.just("k" * 200))),
    )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_generated_requests_get_clear_statuses(stub: gateway_pb2_grpc.GatewayStub, request: pb.InferRequest) -> None:
    try:
        stub.Infer(request, timeout=10)
        codes["OK"] += 1
    except grpc.RpcError as error:
        code = error.code()
        codes[code.name] += 1
        assert code not in FORBIDDEN, (code, error.details(), request)
        assert code in INPUT_ERRORS, (code, error.details())
        assert error.details(), "every refusal says why"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200))
def test_malformed_protobuf_is_refused_cleanly(gateway_thread: GatewayThread, payload: bytes) -> None:
    with grpc.insecure_channel(gateway_thread.target) as channel:
        raw = channel.unary_unary("/switchyard.v1.Gateway/Infer")  # bytes in, bytes out
        try:
            raw(payload, timeout=10)
            codes["raw OK"] += 1
        except grpc.RpcError as error:
            codes[f"raw {error.code().name}"] += 1
            assert error.code() not in FORBIDDEN, (error.code(), error.details(), payload)


def test_gateway_is_healthy_after_fuzzing(stub: gateway_pb2_grpc.GatewayStub) -> None:
    images = np.zeros((2, 64), np.float32)
    reply = stub.Infer(pb.InferRequest(route="digits", inputs=[from_numpy("image", images)]), timeout=10)
    assert reply.outputs
    total = sum(codes.values())
    print(f"\nfuzzing: {total} generated calls; statuses: {dict(sorted(codes.items()))}")
    assert total >= 1500


def test_malformed_message_on_a_stream_fails_it_after_earlier_answers(gateway_thread: GatewayThread) -> None:
    good = pb.InferRequest(
        route="digits", request_id="good", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))]
    ).SerializeToString()
    with grpc.insecure_channel(gateway_thread.target) as channel:
        stream = channel.stream_stream("/switchyard.v1.Gateway/InferStream")  # bytes in, bytes out
        call = stream(iter([good, b"\xff\xff\xff"]), timeout=10)
        answers = []
        with pytest.raises(grpc.RpcError) as info:
            for message in call:
                answers.append(pb.StreamInferResponse.FromString(message).request_id)
        progressive = channel.unary_stream("/switchyard.v1.Gateway/InferProgressive")
        with pytest.raises(grpc.RpcError) as progressive_info:
            list(progressive(b"\x0a\xff", timeout=10))
    assert answers == ["good"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "switchyard.v1.InferRequest" in info.value.details()
    assert progressive_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
