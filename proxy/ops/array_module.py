"""The array module: CuPy on a CUDA device, NumPy otherwise.

Pre- and post-processing ops are written once against ``xp``. The choice is
made once per process: CuPy when it imports and sees a device (and
``SWITCHYARD_DEVICE`` is not ``cpu``), NumPy otherwise. ``to_device`` and
``to_host`` move arrays across; with NumPy they are no-ops.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt


@functools.cache
def array_module() -> ModuleType:
    """``cupy`` if usable here, else ``numpy``."""
    if os.environ.get("SWITCHYARD_DEVICE", "auto").lower() == "cpu":
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy  # type: ignore[no-any-return]
    except Exception:
        pass
    return np


def to_device(array: Any, xp: ModuleType) -> Any:
    """``array`` on ``xp``'s device; object arrays (BYTES tensors) stay on the host, where only CPU ops read them."""
    if xp is np or (isinstance(array, np.ndarray) and array.dtype == object):
        return array
    return xp.asarray(array)


def to_host(array: Any) -> npt.NDArray[Any]:
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else np.asarray(array)
