"""The Python-backend runner: batching helpers, and ``execute`` against a stand-in for Triton's utils."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from switchyard.models import onnx_runner
from switchyard.models.build import MODELS, build_repository
from switchyard.models.datasets import digits_split
from switchyard.models.onnx_runner import TritonPythonModel, concat_rows, row_count, split_rows

# -- pure helpers ---------------------------------------------------------------


def test_split_rows_returns_each_request_its_rows() -> None:
    batched = np.arange(12).reshape(6, 2)
    parts = split_rows(batched, [1, 3, 2])
    assert [p.shape for p in parts] == [(1, 2), (3, 2), (2, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), batched)
    np.testing.assert_array_equal(parts[1], [[2, 3], [4, 5], [6, 7]])


def test_split_rows_of_a_1d_output() -> None:
    parts = split_rows(np.array([7, 8, 9]), [2, 1])
    assert [p.tolist() for p in parts] == [[7, 8], [9]]


def test_split_rows_single_request_and_empty_request() -> None:
    batched = np.ones((4, 3))
    (only,) = split_rows(batched, [4])
    assert only.shape == (4, 3)
    assert [p.shape[0] for p in split_rows(batched, [0, 4, 0])] == [0, 4, 0]


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([2, 3], "output has 6 rows, requests asked for 5"),
        ([4, 3], "output has 6 rows, requests asked for 7"),
        ([7, -1], "row counts must be >= 0, got [7, -1]"),
    ],
)
def test_split_rows_refuses_counts_that_do_not_add_up(counts: list[int], message: str) -> None:
    with pytest.raises(ValueError) as info:
        split_rows(np.zeros((6, 2)), counts)
    assert str(info.value) == message


def test_split_rows_refuses_a_scalar() -> None:
    with pytest.raises(ValueError, match="output has no batch dimension"):
        split_rows(np.array(1.0, np.float32), [1])


def test_concat_rows_concatenates_each_input_in_request_order() -> None:
    first: dict[str, np.ndarray[Any, Any]] = {"a": np.zeros((1, 2), np.float32), "b": np.zeros((1,), np.int64)}
    second: dict[str, np.ndarray[Any, Any]] = {"b": np.ones((2,), np.int64), "a": np.ones((2, 2), np.float32)}
    batched = concat_rows([first, second])
    assert batched["a"].shape == (3, 2) and batched["b"].tolist() == [0, 1, 1]


def test_concat_rows_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"request 1 has inputs \['c'\], expected \['a'\]"):
        concat_rows([{"a": np.zeros((1, 2))}, {"c": np.zeros((1, 2))}])


def test_row_count() -> None:
    assert row_count({"a": np.zeros((5, 2)), "b": np.zeros((5,))}) == 5
    with pytest.raises(ValueError, match=r"inputs disagree on the batch dimension \('a': 5, 'b': 4\)"):
        row_count({"a": np.zeros((5, 2)), "b": np.zeros((4,))})
    with pytest.raises(ValueError, match="request has no inputs"):
        row_count({})
    with pytest.raises(ValueError, match="input 'a' has no batch dimension"):
        row_count({"a": np.array(1.0, np.float32)})


# -- execute, with a stand-in for triton_python_backend_utils ---------------------


@dataclass
class FakeTensor:
    name: str
    array: np.ndarray[Any, Any]

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


@dataclass
class FakeRequest:
    tensors: dict[str, FakeTensor] = field(default_factory=dict)


@dataclass
class FakeError:
    message: str


@dataclass
class FakeResponse:
    output_tensors: list[FakeTensor]
    error: FakeError | None = None


FAKE_PB_UTILS = SimpleNamespace(
    Tensor=FakeTensor,
    InferenceResponse=FakeResponse,
    TritonError=FakeError,
    get_input_tensor_by_name=lambda request, name: request.tensors.get(name),
    triton_string_to_numpy=lambda name: {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}[name],
)


@pytest.fixture(scope="module")
def digits_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = build_repository(tmp_path_factory.mktemp("runner"), models=MODELS[:1])
    return repository / "digits_logreg"


@pytest.fixture
def runner(digits_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> TritonPythonModel:
    monkeypatch.setattr(onnx_runner, "pb_utils", FAKE_PB_UTILS)
    # Triton hands the model its config as JSON (what protobuf's json_format would print).
    config = {
        "name": "digits_logreg",
        "input": [{"name": "image", "data_type": "TYPE_FP32", "dims": ["64"]}],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": ["1"], "reshape": {"shape": []}},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["10"]},
        ],
    }
    model = TritonPythonModel()
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(digits_model_dir), "model_version": "1"}
    )
    return model


def _request(rows: np.ndarray[Any, Any]) -> FakeRequest:
    return FakeRequest({"image": FakeTensor("image", rows)})


def _outputs(response: FakeResponse) -> dict[str, np.ndarray[Any, Any]]:
    assert response.error is None, response.error
    return {t.name: t.array for t in response.output_tensors}


def test_execute_answers_each_request_with_its_own_rows(runner: TritonPythonModel, digits_model_dir: Path) -> None:
    x = digits_split().X_test[:10]
    reference = ort.InferenceSession(str(digits_model_dir / "1" / "model.onnx")).run(None, {"image": x})
    sizes = [1, 4, 2, 3]
    starts = np.cumsum([0, *sizes[:-1]])
    requests = [_request(x[s : s + n]) for s, n in zip(starts, sizes, strict=True)]
    responses = runner.execute(requests)
    assert len(responses) == len(requests)
    for response, start, size in zip(responses, starts, sizes, strict=True):
        out = _outputs(response)
        assert out["label"].dtype == np.int64 and out["label"].shape == (size,)
        assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (size, 10)
        np.testing.assert_array_equal(out["label"], reference[0][start : start + size])
        np.testing.assert_allclose(out["probabilities"], reference[1][start : start + size], atol=1e-6)


def test_execute_fails_only_the_bad_request(runner: TritonPythonModel) -> None:
    x = digits_split().X_test[:3]
    requests = [
        _request(x[:1]),
        _request(np.zeros((1, 63), np.float32)),  # onnxruntime rejects the batch, then this one alone
        FakeRequest(),  # no input at all
        _request(x[1:3]),
    ]
    responses = runner.execute(requests)
    assert _outputs(responses[0])["label"].shape == (1,)
    assert responses[1].error is not None and responses[1].error.message.startswith("digits_logreg: ")
    assert responses[2].error == FakeError("digits_logreg: missing input 'image'")
    assert _outputs(responses[3])["label"].shape == (2,)


def test_execute_single_bad_request_gets_an_error(runner: TritonPythonModel) -> None:
    (response,) = runner.execute([_request(np.zeros((2, 65), np.float32))])
    assert response.error is not None
    assert response.output_tensors == []
