from __future__ import annotations

import numpy as np
import pytest

from switchyard.client import errors, messages
from switchyard.client.results import InferResult, ModelRef, ProgressiveResult, RouteStep, StreamRequest
from switchyard.v1 import gateway_pb2 as pb


def test_infer_request_carries_every_field() -> None:
    request = messages.infer_request(
        "r",
        {"x": np.array([1.0], dtype=np.float32), "s": np.array(["a"])},
        outputs=["y"],
        request_id="id-1",
        model_versions={"m": 3, "n": "v2"},
        bypass_cache=True,
        data_key="img-1",
    )
    assert request.route == "r"
    assert request.request_id == "id-1"
    assert [(t.name, t.datatype) for t in request.inputs] == [("x", "FP32"), ("s", "BYTES")]
    assert list(request.outputs) == ["y"]
    assert dict(request.model_versions) == {"m": "3", "n": "v2"}
    assert request.bypass_cache is True
    assert request.data_key == "img-1"
    assert messages.infer_request("r", {}).data_key == ""


def test_infer_request_assigns_distinct_ids() -> None:
    first = messages.infer_request("r", {})
    second = messages.infer_request("r", {})
    assert len(first.request_id) == 32 and first.request_id != second.request_id


def test_outputs_as_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match="outputs must be a sequence of output names, not a string"):
        messages.infer_request("r", {}, outputs="y")


def test_stream_request_rejects_duplicates_and_wrong_types() -> None:
    seen: set[str] = set()
    messages.stream_request(StreamRequest("r", {}, request_id="a"), seen)
    with pytest.raises(ValueError, match="request_id 'a' was already sent on this stream"):
        messages.stream_request(StreamRequest("r", {}, request_id="a"), seen)
    with pytest.raises(ValueError, match="StreamRequest.request_id must not be empty"):
        messages.stream_request(StreamRequest("r", {}, request_id=""), seen)
    with pytest.raises(TypeError, match="infer_stream takes StreamRequest items, got dict"):
        messages.stream_request({"route": "r"}, seen)  # type: ignore[arg-type]


def test_stream_request_carries_the_data_key() -> None:
    assert messages.stream_request(StreamRequest("r", {}, data_key="k"), set()).data_key == "k"
    assert messages.stream_request(StreamRequest("r", {}), set()).data_key == ""


def test_stream_requests_get_distinct_default_ids() -> None:
    assert StreamRequest("r", {}).request_id != StreamRequest("r", {}).request_id


def test_call_metadata_accepts_mappings_and_pairs_and_lowercases_keys() -> None:
    assert messages.call_metadata({"X-Api-Key": "k"}) == (("x-api-key", "k"),)
    assert messages.call_metadata([("a", "1"), ("a", "2")]) == (("a", "1"), ("a", "2"))
    assert messages.call_metadata(None) is None


def test_stream_item_without_result_is_an_unknown_error_for_that_request() -> None:
    item = messages.stream_item(pb.StreamInferResponse(request_id="r9"))
    assert isinstance(item, errors.Unknown)
    assert item.request_id == "r9"


def test_stream_item_takes_the_outer_request_id_when_the_response_has_none() -> None:
    item = messages.stream_item(pb.StreamInferResponse(request_id="r1", response=pb.InferResponse(route="x")))
    assert isinstance(item, InferResult)
    assert item.request_id == "r1"


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (pb.ROUTE_KIND_SINGLE, "single"),
        (pb.ROUTE_KIND_SERIAL, "serial"),
        (pb.ROUTE_KIND_PARALLEL, "parallel"),
        (pb.ROUTE_KIND_PROGRESSIVE, "progressive"),
        (pb.ROUTE_KIND_UNSPECIFIED, "unspecified"),
        (42, "unknown"),
    ],
)
def test_route_kind_names(kind: int, name: str) -> None:
    assert messages.route_kind(kind) == name


def test_infer_result_lookup() -> None:
    result = InferResult(
        outputs={"y": np.array([1])}, route="r", request_id="i", models=[ModelRef("m", "1")], cached=False
    )
    assert result["y"].tolist() == [1]
    assert "y" in result and "z" not in result
    assert list(result) == ["y"]
    assert result.models == [("m", "1")]
    with pytest.raises(KeyError, match=r"no output 'z'; the answer has \['y'\]"):
        result["z"]


def test_infer_result_decodes_missing_branches() -> None:
    response = pb.InferResponse(
        route="p",
        request_id="r1",
        missing=[
            pb.BranchError(branch="a", status=pb.Status(code=4, message="late")),
            pb.BranchError(branch="b", status=pb.Status(code=14, message="down")),
            pb.BranchError(branch="c"),  # no status: an unknown failure
        ],
    )
    result = messages.infer_result(response)
    assert list(result.missing) == ["a", "b", "c"]
    assert isinstance(result.missing["a"], errors.DeadlineExceeded) and result.missing["a"].message == "late"
    assert isinstance(result.missing["b"], errors.Unavailable) and result.missing["b"].message == "down"
    assert isinstance(result.missing["c"], errors.Unknown)
    assert {error.request_id for error in result.missing.values()} == {"r1"}
    assert messages.infer_result(pb.InferResponse(route="p")).missing == {}


def test_infer_result_missing_defaults_to_empty() -> None:
    result = InferResult({}, "r", "i", [], False)
    assert result.missing == {}
    assert InferResult({}, "r", "j", [], False).missing is not result.missing


def test_progressive_result_for_a_response() -> None:
    message = pb.ProgressiveResponse(
        stage="fast", stage_index=0, final=False, response=pb.InferResponse(route="p", cached=True)
    )
    item = messages.progressive_result(message, request_id="r1")
    assert isinstance(item, ProgressiveResult)
    assert (item.stage, item.stage_index, item.final, item.ok, item.error) == ("fast", 0, False, True, None)
    assert item.result is not None and item.result.request_id == "r1" and item.result.cached is True


def test_progressive_result_for_an_error() -> None:
    message = pb.ProgressiveResponse(stage="accurate", stage_index=1, final=True, error=pb.Status(code=13, message="x"))
    item = messages.progressive_result(message, request_id="r2")
    assert (item.stage, item.stage_index, item.final, item.ok, item.result) == ("accurate", 1, True, False, None)
    assert isinstance(item.error, errors.Internal)
    assert (item.error.message, item.error.request_id) == ("x", "r2")


def test_progressive_result_without_response_or_error_is_unknown() -> None:
    item = messages.progressive_result(pb.ProgressiveResponse(stage="s", final=True), request_id="r3")
    assert not item.ok
    assert isinstance(item.error, errors.Unknown) and item.error.request_id == "r3"


def test_route_info_decodes_steps_and_cached() -> None:
    info = pb.RouteInfo(
        name="r",
        kind=pb.ROUTE_KIND_SERIAL,
        steps=[
            pb.RouteStep(name="detect", models=[pb.ModelRef(name="det", version="1")]),
            pb.RouteStep(name="classify", models=[pb.ModelRef(name="a"), pb.ModelRef(name="b", version="2")]),
        ],
        cached=True,
    )
    route = messages.route_info(info)
    assert route.kind == "serial" and route.cached is True
    assert route.steps == [
        RouteStep("detect", [ModelRef("det", "1")]),
        RouteStep("classify", [ModelRef("a", ""), ModelRef("b", "2")]),
    ]
    plain = messages.route_info(pb.RouteInfo(name="single"))
    assert (plain.steps, plain.cached) == ([], False)
