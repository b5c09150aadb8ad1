"""Small ONNX models built in the tests: what a user would bring to ``switchyard models add``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def two_inputs(path: Path, *, scale: float = 1.0, batch: str | int = "N", width: int | str = 3) -> Path:
    """``total = (a + b) * scale`` and ``product = a * b``: two FP32 inputs [batch, width]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [batch, width])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [batch, width])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [batch, width])
    product = helper.make_tensor_value_info("product", TensorProto.FLOAT, [batch, width])
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Mul", ["sum", "scale"], ["total"]),
        helper.make_node("Mul", ["a", "b"], ["product"]),
    ]
    scale_init = helper.make_tensor("scale", TensorProto.FLOAT, [], [scale])
    return _save(helper.make_graph(nodes, "two_inputs", [a, b], [total, product], [scale_init]), path)


def one_input(path: Path, elem_type: int, dims: list[int | str] | None, *, name: str = "x") -> Path:
    """An Identity graph: input ``name`` of ``elem_type`` and ``dims`` (None: no shape) to output ``y``."""
    x = helper.make_tensor_value_info(name, elem_type, dims)
    y = helper.make_tensor_value_info("y", elem_type, dims)
    return _save(helper.make_graph([helper.make_node("Identity", [name], ["y"])], "one_input", [x], [y]), path)


def sequence_output(path: Path) -> Path:
    """A graph whose output is a sequence of tensors (as a zipmap'd classifier's is)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    node = helper.make_node("SequenceConstruct", ["x"], ["seq"])
    return _save(helper.make_graph([node], "sequence", [x], [seq]), path)


def iris_pipeline(path: Path, *, c: float = 1.0) -> Path:
    """A scikit-learn pipeline (scaler + logistic regression) on the bundled iris data, converted with skl2onnx."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)).fit(features, labels)
    classifier = pipeline.steps[-1][1]
    model = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, 4]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=OPSET,
    )
    path.write_bytes(model.SerializeToString())
    return path


def iris_rows(count: int = 5) -> np.ndarray:
    from sklearn.datasets import load_iris

    features, _ = load_iris(return_X_y=True)
    return np.asarray(features[::30][:count], dtype=np.float32)


def run_locally(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What onnxruntime answers on the same file."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
