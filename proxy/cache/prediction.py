"""The prediction cache's policy: a route's answer from the cache, from a flight in progress, or computed.

Identical requests (same route, model versions, op parameters and input
bytes: :func:`~switchyard.proxy.cache.keys.cache_key`) of a route with
``cache`` are answered from the cache; the versions in the key are the ones
that answer (a request that follows the latest version is keyed by the
latest version the route resolved), and an answer from other versions than
its key names is not stored; identical requests in flight at once
on a route with ``coalesce`` share one computation. A request with
``bypass_cache`` is computed and neither read from the cache nor joined. An
answer that lists missing branches is never stored.
"""

from __future__ import annotations

from typing import Protocol

from switchyard.proxy import tracing
from switchyard.proxy.cache.base import Cache
from switchyard.proxy.cache.coalescing import Coalescer
from switchyard.proxy.cache.keys import cache_key
from switchyard.proxy.lifecycle.context import CallContext
from switchyard.v1 import gateway_pb2 as pb


class CachedRoute(Protocol):
    """What the policy needs of a route (``proxy.routes.base.Route``)."""

    @property
    def name(self) -> str: ...

    cache_ttl_s: float | None
    coalesce: bool

    def answer_key_part(self, request: pb.InferRequest) -> str: ...

    def answer_matches_key(self, request: pb.InferRequest, response: pb.InferResponse) -> bool: ...

    async def infer(self, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse: ...


class PredictionCache:
    """Answers requests through the cache (None: no cache configured) and the coalescer."""

    def __init__(self, cache: Cache | None, *, op_timeout_s: float) -> None:
        self._cache = cache
        self._coalescer = Coalescer()
        self._op_timeout_s = op_timeout_s

    async def answer(self, route: CachedRoute, request: pb.InferRequest, ctx: CallContext) -> pb.InferResponse:
        """The route's answer to ``request``, through the cache and coalescing where the route has them."""
        cache = self._cache if route.cache_ttl_s is not None else None
        if cache is None and not route.coalesce:
            return await route.infer(request, ctx)
        key = cache_key(route.name, route.answer_key_part(request), request.inputs, request.outputs)
        if cache is not None and not request.bypass_cache:
            with tracing.span("cache"):
                stored = await cache.get(key, route=route.name, timeout_s=min(ctx.remaining(), self._op_timeout_s))
                tracing.set_attribute("switchyard.cache.hit", stored is not None)
            if stored is not None:
                response = pb.InferResponse.FromString(stored)
                response.request_id = ctx.request_id
                response.cached = True
                return response

        async def compute() -> pb.InferResponse:
            response = await route.infer(request, ctx)
            # Stored before the flight ends, so a request arriving just after
            # it finds the answer in the cache rather than calling the backend.
            if cache is not None and not response.missing and route.answer_matches_key(request, response):
                await cache.set(key, response.SerializeToString(), route.cache_ttl_s, timeout_s=self._op_timeout_s)
            return response

        if not route.coalesce or request.bypass_cache:
            return await compute()
        shared, _joined = await self._coalescer.run(key, compute, route=route.name)
        response = pb.InferResponse()
        response.CopyFrom(shared)
        response.request_id = ctx.request_id
        return response

    async def close(self) -> None:
        await self._coalescer.close()


__all__ = ["CachedRoute", "PredictionCache"]
