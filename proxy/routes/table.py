"""Route kinds and the table of routes built from the routes file.

``build_routes`` reads each model's metadata from Triton and builds every
route, or raises ConfigError for the first route that does not fit (unknown
model, op chain that does not type-check, ...): the server never starts
half-configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from switchyard.proxy.backend.triton import InferBackend, ModelInfo
from switchyard.proxy.cache import Cache
from switchyard.proxy.errors import ConfigError, GatewayError, RouteNotFound
from switchyard.proxy.routes.base import Route
from switchyard.proxy.routes.parallel import ParallelRoute
from switchyard.proxy.routes.progressive import ProgressiveRoute
from switchyard.proxy.routes.schema import (
    AnyRouteConfig,
    RouteConfig,
    RoutesFile,
)
from switchyard.proxy.routes.serial import SerialRoute
from switchyard.proxy.routes.single import SingleModelRoute

__all__ = ["KINDS", "RouteTable", "build_routes", "model_field"]


RouteKind = Callable[[Any, Mapping[str, ModelInfo], InferBackend, Cache | None], Route]
"""Builds a route from its configuration, the metadata of the models it names, the backend and the data cache."""

KINDS: dict[str, RouteKind] = {
    "single": SingleModelRoute,
    "serial": SerialRoute,
    "parallel": ParallelRoute,
    "progressive": ProgressiveRoute,
}
"""The route kinds by the ``kind`` of the routes file; a new kind is registered here."""


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = {r.name: r for r in routes}

    def get(self, name: str) -> Route:
        try:
            return self._routes[name]
        except KeyError:
            raise RouteNotFound(name) from None

    def find(self, name: str) -> Route | None:
        """The route named ``name``, or None."""
        return self._routes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __iter__(self) -> Iterator[Route]:
        return iter(sorted(self._routes.values(), key=lambda r: r.name))

    def models(self) -> list[str]:
        return sorted({m for r in self._routes.values() for m in r.description.model_names})


async def build_routes(
    config: RoutesFile, backend: InferBackend, *, timeout_s: float = 10.0, data_cache: Cache | None = None
) -> RouteTable:
    infos: dict[str, ModelInfo] = {}
    for route in config.routes:
        for model in route.models():
            if model in infos:
                continue
            try:
                infos[model] = await backend.model_info(model, timeout_s=timeout_s)
            except GatewayError as exc:
                raise ConfigError(f"routes[{route.name}]{model_field(route, model)}: {exc.message}") from None
    return RouteTable([KINDS[route.kind](route, infos, backend, data_cache) for route in config.routes])


def model_field(route: AnyRouteConfig, model: str) -> str:
    """Where ``model`` is named in the route's configuration (``.steps[1].select.models``)."""
    if isinstance(route, RouteConfig):
        return ".model"
    for i, step in enumerate(route.step_list()):
        if model in step.models():
            field = ".model" if step.model == model else ".select"
            return f".{_STEP_FIELD[route.kind]}[{i}]{field}"
    return ""


_STEP_FIELD = {"serial": "steps", "parallel": "branches", "progressive": "stages"}
