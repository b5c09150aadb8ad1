"""Ops for classifier outputs: softmax, argmax, top-k.

They work on the last axis of a float tensor of scores, batch first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

from pydantic import Field

from switchyard.proxy.ops.base import Arrays, Op, OpTypeError, Specs, register_op
from switchyard.proxy.ops.tensor_ops import FLOAT, require_numeric
from switchyard.proxy.specs import TensorSpec


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
    the input); ``output`` defaults to ``topk``.
    """

    name: ClassVar[str] = "topk"
    k: int = Field(ge=1)
    output: str | None = "topk"

    def output_specs(self, specs: Specs) -> Specs:
        spec = self.input_spec(specs)
        require_numeric(spec)
        classes = spec.shape[-1] if spec.shape else 0
        if len(spec.shape) < 2 or (classes != -1 and classes < self.k):
            raise OpTypeError(f"tensor {spec.name!r} with shape {list(spec.shape)} has fewer than k={self.k} classes")
        out = dict(specs)
        shape = (*spec.shape[:-1], self.k)
        out[f"{self.target}_indices"] = TensorSpec(f"{self.target}_indices", "INT64", shape)
        out[f"{self.target}_scores"] = TensorSpec(f"{self.target}_scores", spec.datatype, shape)
        return out

    def apply(self, arrays: Arrays, xp: ModuleType) -> Arrays:
        scores = arrays[self.tensor]
        # Stable sort on the negated scores: ties keep the lower class first
        # on NumPy and CuPy alike.
        order = xp.argsort(-scores, axis=-1, kind="stable")[..., : self.k]
        out = dict(arrays)
        out[f"{self.target}_indices"] = order.astype(xp.int64)
        out[f"{self.target}_scores"] = xp.take_along_axis(scores, order, axis=-1)
        return out
