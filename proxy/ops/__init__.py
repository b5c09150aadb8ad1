"""Pre- and post-processing ops, written once against the array module.

``build_op`` turns a routes-file entry into an op; importing this package
registers the built-in ops (see ``op_names()``).
"""

from __future__ import annotations

from switchyard.proxy.ops import classification, image_ops, postprocess_ops, tensor_ops
from switchyard.proxy.ops.base import Op, OpTypeError, build_op, op_names, register_op

__all__ = [
    "Op",
    "OpTypeError",
    "build_op",
    "op_names",
    "register_op",
    "classification",
    "image_ops",
    "postprocess_ops",
    "tensor_ops",
]
