"""The generated CNN (``image_cnn``): a valid, deterministic ONNX graph of the documented shape and cost."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, numpy_helper

from switchyard.models import cnn
from switchyard.models.build import MODELS, SEED


def _model(seed: int = SEED) -> ModelProto:
    return cnn.cnn_model("image_cnn", "test", seed=seed)


def _session(model: ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])


def test_same_seed_same_bytes_other_seed_other_weights() -> None:
    assert _model().SerializeToString() == _model().SerializeToString()
    first, other = _model().graph.initializer, _model(SEED + 1).graph.initializer
    assert [t.name for t in first] == [t.name for t in other]
    assert not np.array_equal(numpy_helper.to_array(first[0]), numpy_helper.to_array(other[0]))


def test_graph_is_the_documented_network() -> None:
    model = _model()
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops == {
        "Conv": len(cnn.WIDTHS),
        "Relu": len(cnn.WIDTHS),
        "MaxPool": len(cnn.WIDTHS) - 1,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
        "Softmax": 1,
    }
    assert [(o.domain, o.version) for o in model.opset_import] == [("", cnn.OPSET)]
    conv_weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("conv")]
    assert [w.shape[0] for w in conv_weights if w.ndim == 4] == list(cnn.WIDTHS)


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_are_probabilities_of_the_right_shape(batch: int) -> None:
    images = np.random.default_rng(0).random((batch, 3, cnn.IMAGE_SIDE, cnn.IMAGE_SIDE), dtype=np.float32)
    (probabilities,) = _session(_model()).run(None, {"image": images})
    assert probabilities.dtype == np.float32 and probabilities.shape == (batch, cnn.CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # He initialisation keeps the scale: not all mass on one class, not uniform either.
    assert 0.11 < probabilities.max() < 0.99


def test_rows_are_independent_of_the_batch() -> None:
    images = np.random.default_rng(1).random((4, 3, cnn.IMAGE_SIDE, cnn.IMAGE_SIDE), dtype=np.float32)
    session = _session(_model())
    (together,) = session.run(None, {"image": images})
    alone = np.concatenate([session.run(None, {"image": images[i : i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)


def test_bundled_spec_generates_without_training() -> None:
    (spec,) = [m for m in MODELS if m.name == "image_cnn"]
    assert spec.train is None and spec.generate is not None
    assert "generated weights" in spec.description.lower()
    model = spec.generate(spec)
    assert model.SerializeToString() == cnn.cnn_model(spec.name, spec.description, seed=SEED).SerializeToString()
