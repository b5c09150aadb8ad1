"""Generic tensor ops: cast, reshape, scale, standardize, clip.

Each keeps the batch dimension; none looks at what the numbers mean.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from switchyard.proxy.ops.base import Op, OpTypeError, register_op
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1.tensors import DATATYPES

NUMERIC = frozenset(DATATYPES) - {"BYTES"}
FLOAT = frozenset({"FP16", "FP32", "FP64"})


def require_numeric(spec: TensorSpec, kinds: frozenset[str] = NUMERIC) -> None:
    if spec.datatype not in kinds:
        raise OpTypeError(f"tensor {spec.name!r} is {spec.datatype}, expected one of {', '.join(sorted(kinds))}")


@register_op
class Cast(Op):
    """Converts the element type: ``datatype = "FP32"``."""

    name: ClassVar[str] = "cast"
    datatype: str

    @field_validator("datatype")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in NUMERIC:
            raise ValueError(f"datatype must be one of {', '.join(sorted(NUMERIC))}")
        return value

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec)
        return TensorSpec(spec.name, self.datatype, spec.shape)

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return array.astype(DATATYPES[self.datatype], copy=False)


@register_op
class Reshape(Op):
    """Reshapes keeping the element count: ``shape = [-1, 64]`` (-1 once, for the batch)."""

    name: ClassVar[str] = "reshape"
    shape: list[int] = Field(min_length=1)

    @field_validator("shape")
    @classmethod
    def _one_free(cls, value: list[int]) -> list[int]:
        if value.count(-1) > 1 or any(d == 0 or d < -1 for d in value):
            raise ValueError("shape takes positive dimensions and at most one -1")
        return value

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        fixed_in = [d for d in spec.shape if d != -1]
        fixed_out = [d for d in self.shape if d != -1]
        count_in = 1
        for d in fixed_in:
            count_in *= d
        count_out = 1
        for d in fixed_out:
            count_out *= d
        if spec.shape.count(-1) != self.shape.count(-1) or count_in != count_out:
            raise OpTypeError(f"cannot reshape {list(spec.shape)} to {self.shape}")
        return TensorSpec(spec.name, spec.datatype, tuple(self.shape))

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return array.reshape(self.shape)


@register_op
class Scale(Op):
    """``x * factor + offset`` on a float tensor."""

    name: ClassVar[str] = "scale"
    factor: float = 1.0
    offset: float = 0.0

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec, FLOAT)
        return spec

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return (array * array.dtype.type(self.factor) + array.dtype.type(self.offset)).astype(array.dtype, copy=False)


@register_op
class Standardize(Op):
    """``(x - mean) / std`` per feature (last axis) for tabular inputs."""

    name: ClassVar[str] = "standardize"
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> Standardize:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec, FLOAT)
        if spec.shape[-1] != len(self.mean):
            raise OpTypeError(f"tensor {spec.name!r} has {spec.shape[-1]} features, mean/std have {len(self.mean)}")
        return spec

    def compute(self, array: Any, xp: ModuleType) -> Any:
        mean = xp.asarray(self.mean, dtype=array.dtype)
        std = xp.asarray(self.std, dtype=array.dtype)
        return (array - mean) / std


@register_op
class Clip(Op):
    """Bounds values to ``[min, max]`` (post-correction: a price is never negative)."""

    name: ClassVar[str] = "clip"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Clip:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec)
        return spec

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return xp.clip(array, self.min, self.max).astype(array.dtype, copy=False)
