"""Route kinds and the table of routes built from the routes file.

``build_routes`` reads each model's metadata from Triton and builds every
route, or raises ConfigError for the first route that does not fit (unknown
model, op chain that does not type-check, ...): the server never starts
half-configured.
"""

from __future__ import annotations

from switchyard.proxy.backend.triton import TritonBackend
from switchyard.proxy.config import RoutesFile
from switchyard.proxy.errors import ConfigError, GatewayError, RouteNotFound
from switchyard.proxy.routes.base import Route, RouteDescription
from switchyard.proxy.routes.single import SingleModelRoute

__all__ = ["Route", "RouteDescription", "RouteTable", "build_routes"]


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = {r.name: r for r in routes}

    def get(self, name: str) -> Route:
        try:
            return self._routes[name]
        except KeyError:
            raise RouteNotFound(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._routes.values(), key=lambda r: r.name))

    def models(self) -> list[str]:
        return sorted({m for r in self._routes.values() for m in r.description.model_names})


async def build_routes(config: RoutesFile, backend: TritonBackend, *, timeout_s: float = 10.0) -> RouteTable:
    routes: list[Route] = []
    infos = {}
    for route in config.routes:
        if route.model not in infos:
            try:
                infos[route.model] = await backend.model_info(route.model, timeout_s=timeout_s)
            except GatewayError as exc:
                raise ConfigError(f"routes[{route.name}].model: {exc.message}") from None
        routes.append(SingleModelRoute(route, infos[route.model], backend))
    return RouteTable(routes)
