"""The compute-heavy bundled model: a small convolutional network with generated weights.

``image_cnn`` stands in for an image classifier whose own compute dominates a
request (about 10 ms per 224x224 image on one CPU core in onnxruntime), so the
gateway's overhead can be measured where the model, not the hop, is the cost.
Its weights are **generated, not trained**: drawn from a seeded normal
distribution (He initialisation for the convolutions), so its answers carry no
meaning, but they are deterministic and the same for every build.

This module owns the network's graph and weights, written with ``onnx.helper``
(Conv/Relu/MaxPool, GlobalAveragePool, Gemm, Softmax). How the model is served
(``config.pbtxt``, the runner) is ``build.py``'s business, as for every
bundled model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import ModelProto, TensorProto, checker, helper, numpy_helper

IMAGE_SIDE = 224
"""Height and width of the input images."""

IMAGE_CHANNELS = 3

WIDTHS = (48, 96, 192, 384)
"""Output channels of the four 3x3 convolutions; the first has stride 2, each but the last is followed by a 2x2
max pool (224 -> 112 -> 56 -> 28 -> 14), about 0.8 GFLOP per image."""

CLASSES = 10

OPSET = 17


def _conv_weight(rng: np.random.Generator, out_channels: int, in_channels: int) -> npt.NDArray[Any]:
    # He initialisation: keeps the activations' scale through the ReLUs, so the output is neither 0 nor inf.
    std = np.sqrt(2.0 / (in_channels * 9))
    weight: npt.NDArray[Any] = (rng.standard_normal((out_channels, in_channels, 3, 3)) * std).astype(np.float32)
    return weight


def cnn_model(
    name: str,
    description: str,
    *,
    seed: int,
    input_name: str = "image",
    output_name: str = "probabilities",
    widths: Sequence[int] = WIDTHS,
    side: int = IMAGE_SIDE,
) -> ModelProto:
    """The network as an ONNX model: input FP32 ``[N, 3, side, side]``, output class probabilities ``[N, 10]``.

    The same arguments give the same bytes.
    """
    rng = np.random.default_rng(seed)
    nodes = []
    weights = []
    current, in_channels = input_name, IMAGE_CHANNELS
    for index, out_channels in enumerate(widths):
        weight, bias = f"conv{index}.weight", f"conv{index}.bias"
        weights.append(numpy_helper.from_array(_conv_weight(rng, out_channels, in_channels), weight))
        weights.append(numpy_helper.from_array(np.zeros(out_channels, np.float32), bias))
        stride = 2 if index == 0 else 1
        nodes.append(
            helper.make_node(
                "Conv",
                [current, weight, bias],
                [f"conv{index}"],
                name=f"conv{index}",
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"], name=f"relu{index}"))
        current = f"relu{index}"
        if index < len(widths) - 1:
            nodes.append(
                helper.make_node(
                    "MaxPool", [current], [f"pool{index}"], name=f"pool{index}", kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            current = f"pool{index}"
        in_channels = out_channels
    fc = (rng.standard_normal((CLASSES, in_channels)) / np.sqrt(in_channels)).astype(np.float32)
    weights.append(numpy_helper.from_array(fc, "fc.weight"))
    weights.append(numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fc.bias"))
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"], name="global_pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten", axis=1),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], [output_name], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, IMAGE_CHANNELS, side, side])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, CLASSES])],
        weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="switchyard.models.cnn"
    )
    # onnx.helper stamps its own IR version; pin it so a newer onnx package does not change the bytes.
    model.ir_version = 8
    model.doc_string = description
    checker.check_model(model)
    return model
