"""The OIP front's translation: ModelInferRequest -> InferRequest, the answer back, and error fields renamed."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as spb

from switchyard.proxy.errors import InvalidInput, ModelNotFound, RouteNotFound, Unsupported
from switchyard.proxy.grpc.oip_messages import (
    Translated,
    check_classes,
    classify,
    infer_response,
    route_platform,
    translate,
)
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import decode_bytes, from_numpy, to_numpy

ROUTES = frozenset({"digits"})
IMAGE = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)


def oip_request(*, raw: bool = True, **fields: object) -> spb.ModelInferRequest:
    request = spb.ModelInferRequest(model_name="digits", id="r1", **fields)  # type: ignore[arg-type]
    tensor = request.inputs.add(name="image", datatype="FP32", shape=[2, 64])
    if raw:
        request.raw_input_contents.append(IMAGE.tobytes())
    else:
        tensor.contents.fp32_contents.extend(IMAGE.ravel().tolist())
    return request


def test_raw_and_typed_inputs_become_the_same_gateway_request() -> None:
    raw, typed = translate(oip_request(), ROUTES), translate(oip_request(raw=False), ROUTES)
    assert raw.request == typed.request
    assert raw.request.route == "digits" and raw.request.request_id == "r1"
    np.testing.assert_array_equal(to_numpy(raw.request.inputs[0]), IMAGE)
    assert raw.sources == {"image": "raw_input_contents[0]"}
    assert typed.sources == {"image": "inputs[image].contents"}


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False, True], np.bool_),
        ("INT8", "int_contents", [-128, 0, 127], np.int8),
        ("INT16", "int_contents", [-3, 0, 30000], np.int16),
        ("INT32", "int_contents", [-(2**31), 0, 2**31 - 1], np.int32),
        ("INT64", "int64_contents", [-(2**63), 0, 2**63 - 1], np.int64),
        ("UINT8", "uint_contents", [0, 17, 255], np.uint8),
        ("UINT16", "uint_contents", [0, 1, 65535], np.uint16),
        ("UINT32", "uint_contents", [0, 1, 2**32 - 1], np.uint32),
        ("UINT64", "uint64_contents", [0, 1, 2**64 - 1], np.uint64),
        ("FP32", "fp32_contents", [0.5, -1.25, 3.0], np.float32),
        ("FP64", "fp64_contents", [0.1, -2.5, 1e300], np.float64),
    ],
)
def test_every_typed_contents_field_packs_little_endian_bytes(
    datatype: str, field: str, values: list[object], dtype: type
) -> None:
    request = spb.ModelInferRequest(model_name="x")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=[3])
    getattr(tensor.contents, field).extend(values)
    (converted,) = translate(request, ROUTES).request.inputs
    assert converted.raw_data == np.array(values, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def test_bytes_contents_use_tritons_length_prefixed_encoding() -> None:
    request = spb.ModelInferRequest(model_name="x")
    request.inputs.add(name="png", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b""])
    (converted,) = translate(request, ROUTES).request.inputs
    assert converted.raw_data == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    assert list(decode_bytes(converted.raw_data, 2)) == [b"ab", b""]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            lambda r: r.raw_input_contents.append(b"x"),
            "raw_input_contents",
            "has 2 entries for 1 inputs: send one per input, in the order of inputs",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
            "inputs[image].contents",
            "must be empty when raw_input_contents is used (one or the other, for every input)",
        ),
        (
            lambda r: (r.ClearField("raw_input_contents"), r.inputs[0].contents.int_contents.append(1)),
            "inputs[image].contents",
            "holds int_contents; a FP32 input takes fp32_contents",
        ),
        (
            lambda r: (
                r.ClearField("raw_input_contents"),
                setattr(r.inputs[0], "datatype", "INT8"),
                r.inputs[0].contents.int_contents.extend([1, 300]),
            ),
            "inputs[image].contents.int_contents[1]",
            "300 is out of range for INT8",
        ),
        (
            lambda r: (
                r.ClearField("raw_input_contents"),
                setattr(r.inputs[0], "datatype", "FP16"),
                r.inputs[0].contents.fp32_contents.append(1.0),
            ),
            "inputs[image].contents",
            "FP16 has no typed contents; send it in raw_input_contents",
        ),
        (lambda r: setattr(r, "model_version", "v2"), "model_version", "must be a positive integer, got 'v2'"),
        (
            lambda r: r.parameters["bypass_cache"].__setattr__("string_param", "yes"),
            "parameters[bypass_cache]",
            "must be a bool_param, got string_param",
        ),
        (
            lambda r: r.parameters["model_versions"].__setattr__("string_param", "digits_logreg"),
            "parameters[model_versions]",
            "expected model=version[,model=version...], got 'digits_logreg'",
        ),
        (
            lambda r: r.outputs.add(name="probabilities").parameters["classification"].__setattr__("bool_param", True),
            "outputs[0].parameters[classification]",
            "must be an int64_param, got bool_param",
        ),
    ],
)
def test_what_has_no_gateway_request_is_invalid_input_naming_the_oip_field(
    change: object, field: str, reason: str
) -> None:
    request = oip_request()
    change(request)  # type: ignore[operator]
    with pytest.raises(InvalidInput) as info:
        translate(request, ROUTES)
    assert (info.value.field, info.value.reason) == (field, reason)


def test_a_version_other_than_one_is_not_found_and_only_checked_for_routes_served() -> None:
    with pytest.raises(ModelNotFound) as info:
        translate(oip_request(model_version="3"), ROUTES)
    assert info.value.message == "model_version: route 'digits' has no version 3 (its only version is 1)"
    assert translate(oip_request(model_version="1"), ROUTES).request.route == "digits"
    # An unknown route is the data plane's to report (NOT_FOUND naming the route), whatever the version.
    assert translate(spb.ModelInferRequest(model_name="nope", model_version="3"), ROUTES).request.route == "nope"


@pytest.mark.parametrize("where", ["inputs", "outputs"])
def test_shared_memory_is_unsupported(where: str) -> None:
    request = oip_request()
    if where == "inputs":
        request.inputs[0].parameters["shared_memory_region"].string_param = "region"
        field = "inputs[image].parameters[shared_memory_region]"
    else:
        request.outputs.add(name="label").parameters["shared_memory_region"].string_param = "region"
        field = "outputs[0].parameters[shared_memory_region]"
    with pytest.raises(Unsupported) as info:
        translate(request, ROUTES)
    assert info.value.message.startswith(f"{field}: shared memory is not supported")


def test_parameters_fill_the_gateway_fields_and_others_are_ignored() -> None:
    request = oip_request()
    request.parameters["bypass_cache"].bool_param = True
    request.parameters["data_key"].string_param = "batch-42"
    request.parameters["model_versions"].string_param = "digits_logreg=1, other = 2"
    request.parameters["priority"].uint64_param = 3  # Triton's; means nothing for a route
    request.parameters["sequence_id"].int64_param = 9  # ignored as Triton ignores it on a model without sequences
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.outputs.add(name="label").parameters["binary_data"].bool_param = False  # gRPC answers raw anyway
    converted = translate(request, ROUTES).request
    assert converted.bypass_cache and converted.data_key == "batch-42"
    assert dict(converted.model_versions) == {"digits_logreg": "1", "other": "2"}
    assert list(converted.outputs) == ["label"]


@pytest.mark.parametrize(
    ("gateway_field", "raw", "oip_field"),
    [
        ("route", True, "model_name"),
        ("request_id", True, "id"),
        ("data_key", True, "parameters[data_key]"),
        ("model_versions[wine_classifier]", True, "parameters[model_versions][wine_classifier]"),
        ("outputs[0]", True, "outputs[0].name"),
        ("inputs[image].raw_data", True, "raw_input_contents[0]"),
        ("inputs[image].raw_data", False, "inputs[image].contents"),
        ("inputs[image].shape[1]", True, "inputs[image].shape[1]"),
        ("inputs[image].datatype", True, "inputs[image].datatype"),
        ("inputs", True, "inputs"),
    ],
)
def test_error_fields_are_renamed_to_the_oip_requests_own(gateway_field: str, raw: bool, oip_field: str) -> None:
    translated = translate(oip_request(raw=raw), ROUTES)
    assert translated.message(InvalidInput(gateway_field, "why")) == f"{oip_field}: why"


def test_unknown_route_names_model_name() -> None:
    assert Translated(pb.InferRequest()).message(RouteNotFound("nope")) == "model_name: no route named 'nope'"


def test_the_answer_has_raw_outputs_the_id_and_what_ran() -> None:
    label, probabilities = np.array([[3], [7]], np.int64), np.full((2, 10), 0.1, np.float32)
    response = pb.InferResponse(
        route="digits",
        request_id="r1",
        outputs=[from_numpy("label", label), from_numpy("probabilities", probabilities)],
        models=[pb.ModelRef(name="digits_logreg", version="1")],
        cached=True,
    )
    answer = infer_response(translate(oip_request(), ROUTES), response, batched=True)
    assert (answer.model_name, answer.model_version, answer.id) == ("digits", "1", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("label", "INT64", [2, 1]),
        ("probabilities", "FP32", [2, 10]),
    ]
    assert answer.raw_output_contents[0] == label.tobytes() and answer.raw_output_contents[1] == probabilities.tobytes()
    assert answer.parameters["cached"].bool_param
    assert answer.parameters["models"].string_param == "digits_logreg=1"
    assert "missing" not in answer.parameters


def test_classification_is_tritons_top_k_strings() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    top = classify(from_numpy("probabilities", scores), 2, batched=True)
    assert (top.datatype, list(top.shape)) == ("BYTES", [2, 2])
    assert list(decode_bytes(top.raw_data, 4)) == [b"0.700000:1", b"0.200000:2", b"0.500000:0", b"0.250000:1"]
    # More classes than there are: all of them; without a batch dimension the whole tensor ranks together.
    whole = classify(from_numpy("probabilities", scores), 9, batched=False)
    assert list(whole.shape) == [6] and decode_bytes(whole.raw_data, 6)[0] == b"0.700000:1"


def test_classification_of_a_bytes_output_is_refused_before_inference() -> None:
    request = oip_request()
    request.outputs.add(name="top_labels").parameters["classification"].int64_param = 2
    translated = translate(request, ROUTES)
    assert translated.classes == {"top_labels": 2}
    with pytest.raises(InvalidInput, match=r"classification needs a numeric output, 'top_labels' is BYTES"):
        check_classes(translated, [TensorSpec("top_labels", "BYTES", (-1, 3))])


def test_platform_names_the_route_kind() -> None:
    assert route_platform(pb.ROUTE_KIND_SINGLE) == "switchyard_single"
    assert route_platform(pb.ROUTE_KIND_PROGRESSIVE) == "switchyard_progressive"
