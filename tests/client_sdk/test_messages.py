from __future__ import annotations

import numpy as np
import pytest

from switchyard.client import errors, messages
from switchyard.client.results import InferResult, ModelRef, StreamRequest
from switchyard.v1 import gateway_pb2 as pb


def test_infer_request_carries_every_field() -> None:
    request = messages.infer_request(
        "r",
        {"x": np.array([1.0], dtype=np.float32), "s": np.array(["a"])},
        outputs=["y"],
        request_id="id-1",
        model_versions={"m": 3, "n": "v2"},
        bypass_cache=True,
    )
    assert request.route == "r"
    assert request.request_id == "id-1"
    assert [(t.name, t.datatype) for t in request.inputs] == [("x", "FP32"), ("s", "BYTES")]
    assert list(request.outputs) == ["y"]
    assert dict(request.model_versions) == {"m": "3", "n": "v2"}
    assert request.bypass_cache is True


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
