"""Ops for classifier outputs: softmax, argmax, top-k (with optional label names).

They work on the last axis of a float tensor of scores, batch first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from switchyard.proxy.errors import GatewayError
from switchyard.proxy.ops.array_module import to_host
from switchyard.proxy.ops.base import Arrays, Op, OpTypeError, Specs, register_op
from switchyard.proxy.ops.tensor_ops import FLOAT, require_numeric
from switchyard.proxy.tensor_spec import TensorSpec


@register_op
class Softmax(Op):
    """Turns logits into probabilities along the last axis."""

    name: ClassVar[str] = "softmax"

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec, FLOAT)
        return spec

    def compute(self, array: Any, xp: ModuleType) -> Any:
        shifted = array - array.max(axis=-1, keepdims=True)
        exp = xp.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)


@register_op
class Argmax(Op):
    """Index of the largest score on the last axis, as INT64."""

    name: ClassVar[str] = "argmax"

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec)
        if len(spec.shape) < 2:
            raise OpTypeError(f"tensor {spec.name!r} needs a batch and a class axis, has shape {list(spec.shape)}")
        return TensorSpec(spec.name, "INT64", spec.shape[:-1])

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return array.argmax(axis=-1).astype(xp.int64)


@register_op
class TopK(Op):
    """The ``k`` best scores and their class indices, best first.

    Writes ``<output>_indices`` (INT64) and ``<output>_scores`` (same type as
    the input); ``output`` defaults to ``topk``. Equal scores keep the lower
    class index first, on NumPy and CuPy alike; NaN ranks above every number.

    With ``labels`` (one name per class, in class order) it also writes
    ``<output>_labels``: a BYTES tensor of the chosen classes' names (UTF-8),
    shaped like the indices. The class axis must then have ``len(labels)``
    entries (checked at start-up when it is static, per request otherwise).
    """

    name: ClassVar[str] = "topk"
    k: int = Field(ge=1)
    output: str | None = "topk"
    labels: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _enough_labels(self) -> TopK:
        if self.labels is not None and len(self.labels) < self.k:
            raise ValueError(f"k={self.k} is more than the {len(self.labels)} labels")
        return self

    def output_specs(self, specs: Specs) -> Specs:
        spec = self.input_spec(specs)
        require_numeric(spec)
        classes = spec.shape[-1] if spec.shape else 0
        if len(spec.shape) < 2 or (classes != -1 and classes < self.k):
            raise OpTypeError(f"tensor {spec.name!r} with shape {list(spec.shape)} has fewer than k={self.k} classes")
        if self.labels is not None and classes not in (-1, len(self.labels)):
            raise OpTypeError(f"tensor {spec.name!r} has {classes} classes but {len(self.labels)} labels are given")
        out = dict(specs)
        shape = (*spec.shape[:-1], self.k)
        out[f"{self.target}_indices"] = TensorSpec(f"{self.target}_indices", "INT64", shape)
        out[f"{self.target}_scores"] = TensorSpec(f"{self.target}_scores", spec.datatype, shape)
        if self.labels is not None:
            out[f"{self.target}_labels"] = TensorSpec(f"{self.target}_labels", "BYTES", shape)
        return out

    def apply(self, arrays: Arrays, xp: ModuleType) -> Arrays:
        scores = arrays[self.tensor]
        classes = scores.shape[-1]
        if self.labels is not None and classes != len(self.labels):
            raise GatewayError(
                f"topk: tensor {self.tensor!r} has {classes} classes but {len(self.labels)} labels are configured"
            )
        # A descending sort that keeps ties in index order: stable ascending
        # argsort of the reversed scores, reversed back and mapped to the
        # original indices. Works for every numeric type (no negation, which
        # would wrap unsigned integers and fail on BOOL).
        ascending = xp.argsort(scores[..., ::-1], axis=-1, kind="stable")
        order = (classes - 1 - ascending[..., ::-1][..., : self.k]).astype(xp.int64)
        out = dict(arrays)
        out[f"{self.target}_indices"] = order
        out[f"{self.target}_scores"] = xp.take_along_axis(scores, order, axis=-1)
        if self.labels is not None:
            names = np.array([label.encode("utf-8") for label in self.labels], dtype=np.object_)
            out[f"{self.target}_labels"] = names[to_host(order)]
        return out
