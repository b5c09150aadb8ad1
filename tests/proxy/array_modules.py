"""The array modules the op tests run on: NumPy always, CuPy where a CUDA device and CuPy exist."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest


def _cupy() -> ModuleType | None:
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:
        return None


CUPY = _cupy()
MODULES = [
    pytest.param(np, id="numpy"),
    pytest.param(CUPY, id="cupy", marks=pytest.mark.skipif(CUPY is None, reason="no CUDA device or CuPy")),
]
