"""The model repository build: reproducible bytes, valid Triton configs, accurate models."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from switchyard.models.build import MODELS, RUNNER, build_repository, main, render_config, source_fingerprint
from switchyard.models.datasets import digits_split, wine_split

MODEL_NAMES = ["digits_logreg", "wine_classifier", "wine_alcohol_regressor"]

# (name, Triton dtype, dims without the batch dim, reshape or None)
TensorRow = tuple[str, str, list[int], list[int] | None]

# name -> (inputs, outputs)
EXPECTED_IO: dict[str, tuple[list[TensorRow], list[TensorRow]]] = {
    "digits_logreg": (
        [("image", "TYPE_FP32", [64], None)],
        [("label", "TYPE_INT64", [1], []), ("probabilities", "TYPE_FP32", [10], None)],
    ),
    "wine_classifier": (
        [("features", "TYPE_FP32", [12], None)],
        [("label", "TYPE_INT64", [1], []), ("probabilities", "TYPE_FP32", [3], None)],
    ),
    "wine_alcohol_regressor": (
        [("features", "TYPE_FP32", [12], None)],
        [("alcohol", "TYPE_FP32", [1], None)],
    ),
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("first") / "repository")


@pytest.fixture(scope="module")
def second_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("second") / "repository")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _session(repository: Path, model: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _config(repository: Path, model: str) -> model_config_pb2.ModelConfig:
    text = (repository / model / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_two_builds_are_byte_identical(repository: Path, second_repository: Path) -> None:
    first, second = _files(repository), _files(second_repository)
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert not different, f"files differ between builds: {different}"


def test_layout_is_one_folder_per_model(repository: Path) -> None:
    assert sorted(_files(repository)) == sorted(
        f"{model}/{path}" for model in MODEL_NAMES for path in ("config.pbtxt", "1/model.onnx", "1/model.py")
    )
    for model in MODEL_NAMES:
        assert (repository / model / "1" / "model.py").read_bytes() == RUNNER.read_bytes()


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_config_batches_dynamically_on_two_cpu_instances(repository: Path, model: str) -> None:
    config = _config(repository, model)
    assert config.name == model
    assert config.backend == "python"
    assert config.max_batch_size == 64
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32, 64]
    assert len(config.instance_group) == 1
    assert config.instance_group[0].count >= 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_config_tensors(repository: Path, model: str) -> None:
    config = _config(repository, model)

    def described(tensors: Iterable[Any]) -> list[TensorRow]:
        return [
            (
                t.name,
                model_config_pb2.DataType.Name(t.data_type),
                list(t.dims),
                list(t.reshape.shape) if t.HasField("reshape") else None,
            )
            for t in tensors
        ]

    expected_inputs, expected_outputs = EXPECTED_IO[model]
    assert described(config.input) == expected_inputs
    assert described(config.output) == expected_outputs


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_onnx_tensors_match_config(repository: Path, model: str) -> None:
    session = _session(repository, model)
    expected_inputs, expected_outputs = EXPECTED_IO[model]
    dtypes = {"TYPE_FP32": "tensor(float)", "TYPE_INT64": "tensor(int64)"}
    for nodes, expected in ((session.get_inputs(), expected_inputs), (session.get_outputs(), expected_outputs)):
        assert [node.name for node in nodes] == [name for name, _, _, _ in expected]
        for node, (_, dtype, dims, reshape) in zip(nodes, expected, strict=True):
            assert node.type == dtypes[dtype]
            assert node.shape[1:] == (reshape if reshape is not None else dims)


def test_digits_held_out_accuracy(repository: Path) -> None:
    split = digits_split()
    labels, probabilities = _session(repository, "digits_logreg").run(None, {"image": split.X_test})
    assert labels.dtype == np.int64 and labels.shape == (len(split.y_test),)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(split.y_test), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))
    assert (labels == split.y_test).mean() > 0.9


def test_wine_classifier_held_out_accuracy(repository: Path) -> None:
    split = wine_split()
    labels, probabilities = _session(repository, "wine_classifier").run(None, {"features": split.X_test})
    assert probabilities.shape == (len(split.y_test), 3)
    assert (labels == split.y_test).mean() > 0.9


def test_wine_alcohol_regressor_held_out_r2(repository: Path) -> None:
    split = wine_split()
    (alcohol,) = _session(repository, "wine_alcohol_regressor").run(None, {"features": split.X_test})
    assert alcohol.dtype == np.float32 and alcohol.shape == (len(split.alcohol_test), 1)
    residual = ((split.alcohol_test - alcohol[:, 0]) ** 2).sum()
    total = ((split.alcohol_test - split.alcohol_test.mean()) ** 2).sum()
    assert 1 - residual / total > 0.4


def test_rendered_config_of_every_model_parses() -> None:
    for spec in MODELS:
        config = text_format.Parse(render_config(spec), model_config_pb2.ModelConfig())
        assert config.name == spec.name


def test_rebuild_replaces_model_folders_and_keeps_other_entries(tmp_path: Path) -> None:
    repository = build_repository(tmp_path, models=MODELS[2:])
    stale = repository / MODELS[2].name / "1" / "stale.txt"
    stale.write_text("from an older build")
    keep = repository / "notes.txt"
    keep.write_text("not a model")
    build_repository(tmp_path, models=MODELS[2:])
    assert not stale.exists()
    assert keep.read_text() == "not a model"


def test_command_line_builds_and_reports_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert "digits_logreg: held-out accuracy=" in out
    assert "wine_alcohol_regressor: held-out r2=" in out
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == sorted(MODEL_NAMES)


def test_source_fingerprint_is_stable() -> None:
    first = source_fingerprint()
    assert first == source_fingerprint()
    assert len(first) == 64
