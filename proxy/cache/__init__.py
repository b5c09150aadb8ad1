"""Prediction cache, data cache and request coalescing: the library the routes call.

Owns three things: :func:`cache_key` (a fast, collision-safe key over a route's
identity and a request's tensors), the :class:`Cache` interface with two
backends — :class:`MemoryCache` (in-process LRU with TTL and a byte bound, the
default) and :class:`RedisCache` (shared by every proxy process pointing at the
same Redis) — and :class:`Coalescer` (single flight: identical requests in
flight at the same time are computed once). Values are opaque bytes: a route
stores a serialized ``InferResponse`` (prediction cache) or serialized
pre-processed tensors (data cache). This module does not decide *what* is
cached, for how long, or when a request bypasses the cache: that is the
route's policy. A cache never fails a request: any backend trouble is a miss.
Metrics (hits, misses, evictions, errors, bytes, coalesced calls) are defined
here rather than in ``proxy.metrics`` so the cache stays one self-contained idea.
"""

from __future__ import annotations

from switchyard.proxy.cache.base import CACHE_BYTES, CACHE_ERRORS, CACHE_EVICTIONS, CACHE_REQUESTS, COALESCED, Cache
from switchyard.proxy.cache.coalescing import Coalescer
from switchyard.proxy.cache.keys import DATA_PREFIX, PREDICTION_PREFIX, cache_key
from switchyard.proxy.cache.memory import ENTRY_OVERHEAD, MemoryCache
from switchyard.proxy.cache.redis_cache import RedisCache

__all__ = [
    "CACHE_BYTES",
    "CACHE_ERRORS",
    "CACHE_EVICTIONS",
    "CACHE_REQUESTS",
    "COALESCED",
    "DATA_PREFIX",
    "ENTRY_OVERHEAD",
    "PREDICTION_PREFIX",
    "Cache",
    "Coalescer",
    "MemoryCache",
    "RedisCache",
    "cache_key",
]
