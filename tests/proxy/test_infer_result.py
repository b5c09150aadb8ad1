"""A backend call's answer (``proxy.backend.triton.InferResult``): Triton's reply written straight into a response."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from switchyard.proxy.backend.triton import InferResult
from switchyard.v1 import gateway_pb2 as pb


def _reply() -> service_pb2.ModelInferResponse:
    reply = service_pb2.ModelInferResponse(model_name="m", model_version="3")
    reply.outputs.add(name="label", datatype="INT64", shape=[2])
    reply.outputs.add(name="probabilities", datatype="FP32", shape=[2, 2])
    reply.raw_output_contents.extend([b"\x01" * 16, b"\x02" * 16])
    return reply


EXPECTED = [
    pb.Tensor(name="label", datatype="INT64", shape=[2], raw_data=b"\x01" * 16),
    pb.Tensor(name="probabilities", datatype="FP32", shape=[2, 2], raw_data=b"\x02" * 16),
]


def test_a_reply_goes_into_a_response_as_tensors() -> None:
    result = InferResult("m", "3", reply=_reply())
    response = pb.InferResponse(route="r")
    result.add_outputs_to(response.outputs)
    assert list(response.outputs) == EXPECTED
    assert result.outputs == EXPECTED  # the same tensors, on demand


def test_outputs_given_as_tensors_go_into_a_response_as_they_are() -> None:
    result = InferResult("m", "3", outputs=list(EXPECTED))
    response = pb.InferResponse()
    result.add_outputs_to(response.outputs)
    assert list(response.outputs) == EXPECTED


def test_a_result_holds_outputs_or_a_reply() -> None:
    with pytest.raises(ValueError, match="either outputs or Triton's reply"):
        InferResult("m", "3")
    with pytest.raises(ValueError, match="either outputs or Triton's reply"):
        InferResult("m", "3", outputs=[], reply=_reply())
