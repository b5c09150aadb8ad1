"""Validation: each malformed request is rejected naming the field, before any backend call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from switchyard.proxy.errors import InvalidInput
from switchyard.proxy.lifecycle.validation import RequestChecker
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy

INPUTS = (TensorSpec("image", "FP32", (-1, 64)), TensorSpec("mask", "BYTES", (-1,)))
OUTPUTS = (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 10)))


def check_request(request: pb.InferRequest, *specs: Sequence[TensorSpec], **route: Any) -> None:
    """One request through a route's checker (what the data plane makes once per route)."""
    RequestChecker(*specs, **route).check(request)


def good(batch: int = 2) -> pb.InferRequest:
    return pb.InferRequest(
        route="r",
        inputs=[
            from_numpy("image", np.zeros((batch, 64), np.float32)),
            from_numpy("mask", np.array([b"a"] * batch, dtype=object)),
        ],
    )


def check(request: pb.InferRequest, max_request_bytes: int = 1 << 20) -> None:
    check_request(request, INPUTS, OUTPUTS, models=("m",), max_batch_size=8, max_request_bytes=max_request_bytes)


def test_good_request_passes() -> None:
    check(good())


def mutate(fn):  # type: ignore[no-untyped-def]
    request = good()
    fn(request)
    return request


def _image(r: pb.InferRequest) -> pb.Tensor:
    return r.inputs[0]


CASES = [
    ("missing input", mutate(lambda r: r.inputs.pop()), "inputs[mask]", "required input is missing"),
    (
        "unknown input",
        mutate(lambda r: r.inputs.add(name="extra", datatype="FP32", shape=[2])),
        "inputs[extra].name",
        "unknown input",
    ),
    ("duplicate input", mutate(lambda r: r.inputs.append(r.inputs[0])), "inputs[image].name", "given twice"),
    (
        "wrong datatype",
        mutate(lambda r: setattr(_image(r), "datatype", "FP64")),
        "inputs[image].datatype",
        "expected FP32, got FP64",
    ),
    (
        "unknown datatype",
        mutate(lambda r: setattr(_image(r), "datatype", "FLOAT")),
        "inputs[image].datatype",
        "unknown datatype",
    ),
    ("wrong rank", mutate(lambda r: _image(r).shape.append(1)), "inputs[image].shape", "expected rank 2"),
    (
        "wrong dim",
        mutate(lambda r: _image(r).shape.__setitem__(1, 63)),
        "inputs[image].shape[1]",
        "expected 64, got 63",
    ),
    ("negative dim", mutate(lambda r: _image(r).shape.__setitem__(0, -2)), "inputs[image].shape[0]", "must be >= 0"),
    (
        "short bytes",
        mutate(lambda r: setattr(_image(r), "raw_data", _image(r).raw_data[:-1])),
        "inputs[image].raw_data",
        "needs 512",
    ),
    (
        "huge shape tiny bytes",
        mutate(lambda r: _image(r).shape.__setitem__(0, 10**12)),
        "inputs[image].shape[0]",
        "exceeds",
    ),
    (
        "empty batch",
        mutate(
            lambda r: [t.shape.__setitem__(0, 0) for t in r.inputs] and [setattr(t, "raw_data", b"") for t in r.inputs]
        ),
        "inputs[image].shape[0]",
        "batch is empty",
    ),
    ("batch above max", mutate(lambda r: r.CopyFrom(good(9))), "inputs[image].shape[0]", "maximum of 8"),
    (
        "mismatched batches",
        mutate(lambda r: r.inputs[1].CopyFrom(from_numpy("mask", np.array([b"a"] * 3, dtype=object)))),
        "inputs[mask].shape[0]",
        "differs",
    ),
    (
        "bad BYTES lengths",
        mutate(lambda r: setattr(r.inputs[1], "raw_data", b"\xff\x00\x00\x00ab")),
        "inputs[mask].raw_data",
        "declares 255 bytes",
    ),
    ("unknown output", mutate(lambda r: r.outputs.append("logits")), "outputs[0]", "unknown output 'logits'"),
    ("output twice", mutate(lambda r: r.outputs.extend(["label", "label"])), "outputs[1]", "requested twice"),
    (
        "pin unknown model",
        mutate(lambda r: r.model_versions.__setitem__("other", "1")),
        "model_versions[other]",
        "does not use model",
    ),
    (
        "pin bad version",
        mutate(lambda r: r.model_versions.__setitem__("m", "latest")),
        "model_versions[m]",
        "positive integer",
    ),
    ("long request id", mutate(lambda r: setattr(r, "request_id", "x" * 200)), "request_id", "200 bytes long"),
    # 65 characters, 130 bytes in UTF-8: the bound is in bytes.
    ("request id bytes", mutate(lambda r: setattr(r, "request_id", "é" * 65)), "request_id", "130 bytes long"),
    (
        "request id newline",
        mutate(lambda r: setattr(r, "request_id", "abc\nINFO forged")),
        "request_id",
        "character 3 ('\\n') is not printable",
    ),
    ("request id escape", mutate(lambda r: setattr(r, "request_id", "\x1b[2J")), "request_id", "character 0"),
    (
        "long unknown input",
        mutate(lambda r: r.inputs.add(name="n\n" + "x" * 10_000, datatype="FP32", shape=[2])),
        "inputs[n\\n" + "x" * 62 + "… (10002 characters)].name",
        "unknown input 'n\\n" + "x" * 62 + "…' (10002 characters) (route inputs: image, mask)",
    ),
    (
        "long unknown output",
        mutate(lambda r: r.outputs.append("o" * 100_000)),
        "outputs[0]",
        "unknown output '" + "o" * 64 + "…' (100000 characters)",
    ),
]


@pytest.mark.parametrize(("case", "request_", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_requests(case: str, request_: pb.InferRequest, field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check(request_)
    assert info.value.field == field
    assert reason in info.value.reason


def test_request_too_large() -> None:
    with pytest.raises(InvalidInput) as info:
        check(good(), max_request_bytes=100)
    assert info.value.field == "inputs"
    assert "at most 100" in info.value.reason


FLOAT_INPUTS = (TensorSpec("features", "FP32", (-1, 4)),)


def check_finite(array: np.ndarray, *, allow: bool, name: str = "features") -> None:
    dtype = {np.float16: "FP16", np.float32: "FP32", np.float64: "FP64"}[array.dtype.type]
    specs = (TensorSpec(name, dtype, (-1, 4)),)
    request = pb.InferRequest(route="r", inputs=[from_numpy(name, array)])
    check_request(
        request, specs, OUTPUTS, models=("m",), max_batch_size=8, max_request_bytes=1 << 20, allow_non_finite=allow
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(("value", "text"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_refused_when_route_forbids_it(dtype: type, value: float, text: str) -> None:
    array = np.ones((2, 4), dtype)
    array.flat[5] = value
    array.flat[7] = np.nan  # only the first bad element is named
    with pytest.raises(InvalidInput) as info:
        check_finite(array, allow=False)
    assert info.value.field == "inputs[features]"
    assert info.value.message == f"inputs[features]: element 5 is {text}; this route accepts finite numbers only"


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_allowed_by_default(dtype: type) -> None:
    array = np.full((2, 4), np.nan, dtype)
    check_finite(array, allow=True)
    request = pb.InferRequest(route="r", inputs=[from_numpy("features", array.astype(np.float32))])
    check_request(request, FLOAT_INPUTS, OUTPUTS, models=("m",), max_batch_size=8, max_request_bytes=1 << 20)


def test_finite_floats_pass_when_route_forbids_non_finite() -> None:
    check_finite(np.array([[0.0, -1.5, 3e38, -3e38]], np.float32), allow=False)
    check_finite(np.array([[65504.0, -65504.0, 0.0, 1e-8]], np.float16), allow=False)


def test_non_float_inputs_are_not_checked_for_finiteness() -> None:
    check(good())  # the BYTES mask is untouched
    check_request(
        good(), INPUTS, OUTPUTS, models=("m",), max_batch_size=8, max_request_bytes=1 << 20, allow_non_finite=False
    )


def test_route_config_takes_allow_non_finite() -> None:
    from switchyard.proxy.routes.schema import RouteConfig

    assert RouteConfig(name="r", model="m").allow_non_finite is True
    assert RouteConfig(name="r", model="m", allow_non_finite=False).allow_non_finite is False


@pytest.mark.parametrize("request_id", ["", "abc", "x" * 128, "req-é-1", "a b"])
def test_request_ids_accepted(request_id: str) -> None:
    request = good()
    request.request_id = request_id
    check(request)


# A route with one numeric input takes the short way when its request is exactly as declared; anything off
# must still be refused, naming the field as the full checks do.
ONE_INPUT = (TensorSpec("pixels", "FP32", (-1, 64)),)


def one_input(rows: int = 2, request_id: str = "", **tensor: Any) -> pb.InferRequest:
    fields = {"name": "pixels", "datatype": "FP32", "shape": [rows, 64], "raw_data": bytes(4 * 64 * rows)}
    return pb.InferRequest(route="r", request_id=request_id, inputs=[pb.Tensor(**{**fields, **tensor})])


def check_one(request: pb.InferRequest, **route: Any) -> int:
    settings: dict[str, Any] = {"models": ("m",), "max_batch_size": 8, "max_request_bytes": 1 << 20, **route}
    return RequestChecker(ONE_INPUT, OUTPUTS, **settings).check(request)


@pytest.mark.parametrize("rows", [1, 2, 8])
def test_a_one_input_request_as_declared_passes_and_gives_its_rows(rows: int) -> None:
    assert check_one(one_input(rows)) == rows


@pytest.mark.parametrize(
    ("request_", "route", "field"),
    [
        (one_input(datatype="FP64"), {}, "inputs[pixels].datatype"),
        (one_input(shape=[2, 63]), {}, "inputs[pixels].shape[1]"),
        (one_input(shape=[2, 64, 1]), {}, "inputs[pixels].shape"),
        (one_input(shape=[-2, 64]), {}, "inputs[pixels].shape[0]"),
        (one_input(0), {}, "inputs[pixels].shape[0]"),
        (one_input(9), {}, "inputs[pixels].shape[0]"),
        (one_input(raw_data=bytes(4 * 64 * 2 - 4)), {}, "inputs[pixels].raw_data"),
        (one_input(name="pixel"), {}, "inputs[pixel].name"),
        (one_input(), {"max_request_bytes": 511}, "inputs"),
        (
            one_input(2, raw_data=np.full((2, 64), np.nan, "<f4").tobytes()),
            {"allow_non_finite": False},
            "inputs[pixels]",
        ),
        (one_input(request_id="a\nb"), {}, "request_id"),
    ],
)
def test_a_one_input_request_that_is_off_is_refused_naming_the_field(
    request_: pb.InferRequest, route: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_one(request_, **route)
    assert caught.value.field == field
