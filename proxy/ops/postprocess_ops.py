"""Post-processing ops for model outputs: threshold.

(Top-k with label names lives with the other classifier ops in
``classification``.)
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import FiniteFloat

from switchyard.proxy.ops.base import Op, register_op
from switchyard.proxy.ops.tensor_ops import require_numeric
from switchyard.proxy.tensor_spec import TensorSpec
from switchyard.v1.tensors import DATATYPES


@register_op
class Threshold(Op):
    """1 where a score is ``>= value``, else 0: ``value = 0.5``, ``datatype = "INT64"`` (or ``"BOOL"``).

    Any numeric input; the shape is kept. The comparison is exact for every
    input type: integer scores are compared with ``ceil(value)``, float
    scores with the smallest number of their own type that is ``>= value``.
    NaN is below every threshold.
    """

    name: ClassVar[str] = "threshold"
    value: FiniteFloat
    datatype: Literal["INT64", "BOOL"] = "INT64"

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec)
        return TensorSpec(spec.name, self.datatype, spec.shape)

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return self._at_least(array, xp).astype(DATATYPES[self.datatype])

    def _at_least(self, array: Any, xp: ModuleType) -> Any:
        dtype = np.dtype(array.dtype)
        if dtype.kind == "f":
            bound = self._float_bound(dtype)
            return array >= bound
        if dtype.kind == "b":
            array, dtype = array.view(np.uint8), np.dtype(np.uint8)
        ceiling = math.ceil(self.value)
        info = np.iinfo(dtype)
        if ceiling > info.max:
            return xp.zeros(array.shape, dtype=bool)
        if ceiling <= info.min:
            return xp.ones(array.shape, dtype=bool)
        return array >= dtype.type(ceiling)

    def _float_bound(self, dtype: np.dtype[Any]) -> Any:
        """The smallest ``dtype`` number ``>= value`` (``inf`` when ``value`` is above the type's range)."""
        with np.errstate(over="ignore"):
            bound = dtype.type(self.value)
        if float(bound) < self.value:
            bound = np.nextafter(bound, dtype.type(np.inf))
        return bound
