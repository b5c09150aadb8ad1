"""compose.yaml, read without running it: in step with the gateway's settings and commands.

Every SWITCHYARD_* variable (the service's and the image's ENV) must be a
gateway setting and a value the gateway accepts; every command must be one
the ``switchyard`` parser takes; ports, the Triton endpoints and the Redis
URLs must name what the other services serve.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from switchyard.proxy.settings import GatewaySettings

from .contract import dockerfile_env, gateway_settings, parse_command, triton_endpoints
from .podman import ROOT

COMPOSE = ROOT / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _settings(service: dict[str, Any], name: str) -> GatewaySettings:
    env = {**dockerfile_env(), **{k: str(v) for k, v in service.get("environment", {}).items()}}
    return gateway_settings(env, f"compose.yaml service {name} (with the image's ENV)")


def _triton_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run ``switchyard triton`` (on the gateway's image)."""
    ours = {name: s for name, s in services.items() if s.get("image") == services["gateway"]["image"]}
    return {name: s for name, s in ours.items() if parse_command(s["command"], f"service {name}").command == "triton"}


def _published(service: dict[str, Any]) -> list[int]:
    """Container ports a service publishes (``host:container``; the host side may be a ${VARIABLE:-default})."""
    return [int(str(mapping).rsplit(":", 1)[1]) for mapping in service.get("ports", [])]


def test_gateway_service_matches_the_gateway(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    args = parse_command(gateway["command"], "service gateway")
    assert args.command == "serve" and args.workers == 2
    settings = _settings(gateway, "gateway")
    assert sorted(_published(gateway)) == sorted([settings.port, settings.metrics_port])
    healthcheck = " ".join(gateway["healthcheck"]["test"])
    assert f"'127.0.0.1:{settings.port}'" in healthcheck and "service=''" in healthcheck

    # The shared cache and job store: Redis, a service of this file.
    assert settings.cache_backend == "redis" and settings.jobs_backend == "redis"
    for url in (settings.redis_url, settings.jobs_redis_url):
        assert url is not None
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        assert host in services and "redis-server" in services[host]["command"] and port == "6379", url
    assert set(gateway["depends_on"]) == {"redis", *_triton_services(services)}


def test_gateway_reaches_every_triton_replica(services: dict[str, dict[str, Any]]) -> None:
    tritons = _triton_services(services)
    assert len(tritons) >= 2, "two Triton replicas at least: one more than a single point of failure"
    settings = _settings(services["gateway"], "gateway")
    reached: set[str] = set()
    for host, port in triton_endpoints(settings.triton_url):
        # A service name, or a network alias that every replica carries.
        named = {
            name
            for name, service in tritons.items()
            if host == name or host in service.get("networks", {}).get("default", {}).get("aliases", [])
        }
        assert named, f"SWITCHYARD_TRITON_URL names {host!r}: no Triton service answers to it"
        for name in named:
            args = parse_command(tritons[name]["command"], f"service {name}")
            assert port == args.grpc_port, f"{host}:{port}, but {name} listens on {args.grpc_port}"
            assert args.host == "0.0.0.0", f"{name} must listen on every address"
            healthcheck = " ".join(tritons[name]["healthcheck"]["test"])
            assert f"127.0.0.1:{args.http_port}/v2/health/ready" in healthcheck, name
        reached |= named
    assert reached == set(tritons), f"the gateway reaches {sorted(reached)} of {sorted(tritons)}"


def test_stop_grace_periods_cover_the_drains(services: dict[str, dict[str, Any]]) -> None:
    def seconds(value: str) -> float:
        assert value.endswith("s"), value
        return float(value[:-1])

    settings = _settings(services["gateway"], "gateway")
    assert seconds(services["gateway"]["stop_grace_period"]) >= settings.grace_s + 5
    for name, service in _triton_services(services).items():
        args = parse_command(service["command"], f"service {name}")
        assert seconds(service["stop_grace_period"]) >= args.grace_s + 15, name
