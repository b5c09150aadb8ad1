"""Checks ``switchyard serve`` makes before it starts anything, for the mistakes of a first hour.

A port already taken, no Triton binary, a model repository that is not
there, a Redis that does not answer: each is found here, before a local
Triton is started or models are built, and reported as one line that names
the setting (its flag and environment variable) and what to do. The checks
that belong to a component stay there (TLS and API key files in
``proxy.grpc.security``, routes in ``proxy.routes``); :func:`where_to_set`
adds the flag and variable to their messages.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import redis.asyncio as redis

from switchyard.proxy.errors import ConfigError
from switchyard.proxy.gateway import PortInUse
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTritonError
from switchyard.server.settings_cli import env_of, flag_of
from switchyard.server.workers import reserve_port

REDIS_TIMEOUT_S = 3.0
"""How long a Redis named in the settings has to answer PING at start."""


class PreflightFailed(ConfigError):
    """Something ``serve`` needs is missing or taken; the message says which setting and what to do."""


class ModelRepositoryMissing(LocalTritonError):
    """``--model-repository`` names no repository (exit status 1, as other local Triton failures)."""


def setting(name: str) -> str:
    """``--port or SWITCHYARD_PORT``: where a user sets a setting."""
    return f"{flag_of(name)} or {env_of(name)}"


def where_to_set(message: str) -> str:
    """``message`` with the flag and variable of the setting it starts with, when it starts with one."""
    first = message.split(" ", 1)[0].rstrip(":;,")
    if first in GatewaySettings.model_fields and flag_of(first) not in message:
        return f"{message} (set by {setting(first)})"
    return message


def check_ports(settings: GatewaySettings) -> None:
    """The gRPC and metrics ports can be bound (a port of 0 is always free)."""
    if settings.port:
        try:
            reserve_port(settings.host, settings.port).close()
        except PortInUse as exc:
            raise PreflightFailed(
                f"{exc}; stop what listens there, or give another port with {setting('port')} (0: any free one)"
            ) from None
    if settings.metrics_port:
        with socket.socket() as probe:
            try:
                probe.bind((settings.metrics_host, settings.metrics_port))
            except OSError as exc:
                raise PreflightFailed(
                    f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc.strerror}; "
                    f"give another port with {setting('metrics_port')}, 0 for any free one, or --no-metrics"
                ) from None


def check_model_repository(path: Path) -> None:
    """A repository named with ``--model-repository`` exists (it may be empty: ``models add`` and a reload fill it)."""
    if not path.is_dir():
        raise ModelRepositoryMissing(
            f"model repository {path} is not a directory (--model-repository): build the bundled models there "
            f"with `switchyard models build --out {path}`, or leave out --model-repository to use them"
        )


async def check_redis(settings: GatewaySettings) -> None:
    """Every Redis the settings use answers PING."""
    uses = []
    if settings.cache_backend == "redis":
        memory = f"use {flag_of('cache_backend')} memory"
        uses.append(("redis_url", settings.redis_url, "cache_backend = redis", memory))
    if settings.jobs_backend == "redis" and settings.jobs_redis_url:
        uses.append(
            (
                "jobs_redis_url",
                settings.jobs_redis_url,
                f"jobs_store = {settings.jobs_store}",
                f"leave {flag_of('jobs_redis_url')} unset for the embedded SQLite store",
            )
        )
    for name, url, because, otherwise in uses:
        problem = await _ping(url)
        if problem is not None:
            raise PreflightFailed(
                f"cannot reach Redis at {url} ({name}, for {because}): {problem}; "
                f"start Redis there, give its URL with {setting(name)}, or {otherwise}"
            )


async def _ping(url: str) -> str | None:
    """None when Redis at ``url`` answers PING in time, else what went wrong."""
    try:
        client = redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
    except ValueError as exc:
        return f"not a Redis URL ({exc})"
    try:
        await asyncio.wait_for(client.ping(), REDIS_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {REDIS_TIMEOUT_S:g} s"
    except redis.RedisError as exc:
        return str(exc).rstrip(".") or type(exc).__name__
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        await client.aclose()
    return None
