"""The tensor codec, as the SDK exports it: ``switchyard.client.tensors`` is ``switchyard.v1.tensors``.

The codec belongs to the contract layer (``switchyard.v1``), which the SDK and
the gateway both use; this module keeps the SDK's documented name for it.
"""

from __future__ import annotations

from switchyard.v1.tensors import (
    DATATYPES,
    TensorDecodeError,
    datatype_of,
    decode_bytes,
    element_count,
    encode_bytes,
    from_numpy,
    itemsize,
    raw_bytes,
    to_numpy,
)

__all__ = [
    "DATATYPES",
    "TensorDecodeError",
    "datatype_of",
    "decode_bytes",
    "element_count",
    "encode_bytes",
    "from_numpy",
    "itemsize",
    "raw_bytes",
    "to_numpy",
]
