"""Ops: results, spec checking, parameter errors; NumPy always, CuPy where a GPU exists."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.ops import OpTypeError, build_op
from switchyard.proxy.ops.array_module import to_device, to_host
from switchyard.proxy.tensor_spec import TensorSpec

from .array_modules import MODULES

rng = np.random.default_rng(7)
SCORES = rng.normal(size=(5, 10)).astype(np.float32)
FEATURES = rng.normal(3.0, 2.0, size=(4, 3)).astype(np.float32)


def run(name: str, params: dict, arrays: dict, xp: ModuleType) -> dict:
    op = build_op(name, params, "test")
    out = op.apply({k: to_device(v, xp) for k, v in arrays.items()}, xp)
    return {k: to_host(v) for k, v in out.items()}


@pytest.mark.parametrize("xp", MODULES)
def test_softmax_rows_sum_to_one_and_match_reference(xp: ModuleType) -> None:
    out = run("softmax", {"tensor": "s", "output": "p"}, {"s": SCORES}, xp)["p"]
    e = np.exp(SCORES - SCORES.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("xp", MODULES)
def test_topk_returns_best_first_and_ties_keep_lower_index(xp: ModuleType) -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.05, 0.05]], dtype=np.float32)
    out = run("topk", {"tensor": "s", "k": 3}, {"s": scores}, xp)
    np.testing.assert_array_equal(out["topk_indices"], [[1, 2, 3], [0, 2, 3]])
    np.testing.assert_allclose(out["topk_scores"], [[0.5, 0.5, 0.2], [0.9, 0.05, 0.05]])
    assert out["topk_indices"].dtype == np.int64


@pytest.mark.parametrize("xp", MODULES)
def test_argmax_cast_reshape_scale_standardize_clip(xp: ModuleType) -> None:
    assert run("argmax", {"tensor": "s"}, {"s": SCORES}, xp)["s"].tolist() == SCORES.argmax(axis=1).tolist()
    img = rng.integers(0, 17, size=(2, 8, 8)).astype(np.uint8)
    cast = run("cast", {"tensor": "x", "datatype": "FP32"}, {"x": img}, xp)["x"]
    assert cast.dtype == np.float32 and np.array_equal(cast, img)
    flat = run("reshape", {"tensor": "x", "shape": [-1, 64]}, {"x": img}, xp)["x"]
    assert flat.shape == (2, 64)
    scaled = run("scale", {"tensor": "x", "factor": 0.5, "offset": 1.0}, {"x": FEATURES}, xp)["x"]
    np.testing.assert_allclose(scaled, FEATURES * 0.5 + 1.0, rtol=1e-6)
    mean, std = [3.0, 2.0, 1.0], [2.0, 1.0, 0.5]
    standard = run("standardize", {"tensor": "x", "mean": mean, "std": std}, {"x": FEATURES}, xp)["x"]
    np.testing.assert_allclose(standard, (FEATURES - mean) / np.array(std, dtype=np.float32), rtol=1e-5)
    clipped = run("clip", {"tensor": "x", "min": 0.0}, {"x": FEATURES - 3.0}, xp)["x"]
    assert clipped.min() >= 0.0 and clipped.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "params", "spec", "message"),
    [
        ("cast", {"tensor": "x", "datatype": "FP32"}, TensorSpec("x", "BYTES", (-1,)), "is BYTES"),
        ("reshape", {"tensor": "x", "shape": [-1, 63]}, TensorSpec("x", "FP32", (-1, 8, 8)), "cannot reshape"),
        ("softmax", {"tensor": "x"}, TensorSpec("x", "INT64", (-1, 3)), "is INT64"),
        ("standardize", {"tensor": "x", "mean": [0.0], "std": [1.0]}, TensorSpec("x", "FP32", (-1, 3)), "3 features"),
        ("topk", {"tensor": "x", "k": 5}, TensorSpec("x", "FP32", (-1, 3)), "fewer than k=5"),
        ("argmax", {"tensor": "y"}, TensorSpec("x", "FP32", (-1, 3)), "tensor 'y' does not exist"),
    ],
)
def test_ops_reject_specs_they_cannot_handle(name: str, params: dict, spec: TensorSpec, message: str) -> None:
    op = build_op(name, params, "routes[r].pre[0]")
    with pytest.raises(OpTypeError, match=message):
        op.output_specs({spec.name: spec})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {"tensor": "x"}, "routes[r].pre[0].op: unknown op 'nope'"),
        ("cast", {"tensor": "x", "datatype": "FP128"}, "routes[r].pre[0].datatype"),
        ("clip", {"tensor": "x"}, "give min, max or both"),
        ("clip", {"tensor": "x", "min": 2.0, "max": 1.0}, "min (2.0) is greater than max (1.0)"),
        ("standardize", {"tensor": "x", "mean": [1.0, 2.0], "std": [1.0]}, "mean has 2 values but std has 1"),
        ("topk", {"tensor": "x", "k": 0}, "routes[r].pre[0].k"),
        ("softmax", {"tensor": "x", "axis": 0}, "routes[r].pre[0].axis: Extra inputs are not permitted"),
        ("no.such.module:Op", {"tensor": "x"}, "cannot be imported"),
        ("switchyard.proxy.errors:ConfigError", {"tensor": "x"}, "is not a subclass"),
    ],
)
def test_bad_op_parameters_name_the_field(name: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_op(name, params, "routes[r].pre[0]")
    assert message in str(info.value)


def test_user_op_by_import_path() -> None:
    op = build_op("switchyard.proxy.ops.tensor_ops:Scale", {"tensor": "x", "factor": 2.0}, "w")
    out = op.apply({"x": np.ones((1, 2), np.float32)}, np)
    assert out["x"].tolist() == [[2.0, 2.0]]
