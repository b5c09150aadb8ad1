"""Cache keys: a fast, collision-safe key over a route's identity and a request's tensors."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import xxhash

from switchyard.v1 import gateway_pb2 as pb

PREDICTION_PREFIX = "sy:p:"
"""Prefix of prediction-cache keys (whole responses)."""
DATA_PREFIX = "sy:d:"
"""Prefix of data-cache keys (pre-processed inputs)."""

# Bumped whenever the hashed layout changes, so old entries in a shared Redis
# can never be read back under the new layout.
_KEY_SCHEME = b"switchyard/cache-key/1\x00"
_U64 = struct.Struct("<Q")


def _put(h: Any, data: bytes) -> None:
    # Every variable-length field is length-prefixed, so ("ab", "c") and
    # ("a", "bc") hash differently.
    h.update(_U64.pack(len(data)))
    h.update(data)


def cache_key(
    route: str,
    fingerprint: str,
    inputs: Sequence[pb.Tensor],
    outputs: Sequence[str] = (),
    *,
    prefix: str = PREDICTION_PREFIX,
) -> str:
    """The cache key of one request: ``prefix`` + 32 hex digits of xxh3-128.

    Hashes the route name, the route's ``fingerprint`` (resolved model versions
    and op parameters, computed by the route), each input's name, datatype,
    shape and raw bytes, and the wanted output names. Inputs are taken in name
    order and outputs sorted, so the order a client sends them in does not
    matter. xxh3 is not cryptographic: the key identifies requests, it does not
    authenticate them.
    """
    h = xxhash.xxh3_128(_KEY_SCHEME)
    _put(h, route.encode())
    _put(h, fingerprint.encode())
    tensors = sorted(inputs, key=lambda t: t.name)
    h.update(_U64.pack(len(tensors)))
    for t in tensors:
        _put(h, t.name.encode())
        _put(h, t.datatype.encode())
        shape = list(t.shape)
        h.update(_U64.pack(len(shape)))
        h.update(struct.pack(f"<{len(shape)}q", *shape))
        _put(h, t.raw_data)
    names = sorted(outputs)
    h.update(_U64.pack(len(names)))
    for name in names:
        _put(h, name.encode())
    return prefix + h.hexdigest()
