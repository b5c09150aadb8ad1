"""What the deployment files must agree on with the code: settings, commands, the Dockerfile's environment.

The manifest tests read the gateway's own definitions (``GatewaySettings``,
the ``switchyard`` command's parser) instead of repeating their values, so a
renamed setting, a changed default port or a flag that no longer exists
fails a test rather than a deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from unittest import mock

from pydantic import ValidationError

from switchyard.client.cli import parser as command_parser
from switchyard.proxy.settings import GatewaySettings

from .podman import ROOT

ENV_PREFIX = "SWITCHYARD_"
DOCKERFILE = ROOT / "Dockerfile"


def setting_names() -> set[str]:
    """Every environment variable a gateway setting is read from."""
    return {ENV_PREFIX + name.upper() for name in GatewaySettings.model_fields}


def gateway_settings(env: Mapping[str, str], where: str) -> GatewaySettings:
    """The settings a gateway started with exactly ``env`` (its SWITCHYARD_* part) would have.

    AssertionError naming ``where`` for a SWITCHYARD_* name that is no setting, or a value the settings refuse.
    """
    ours = {k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}
    unknown = sorted(set(ours) - setting_names())
    assert not unknown, f"{where}: {unknown} set, but no gateway setting has that name (proxy/settings.py)"
    others = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with mock.patch.dict(os.environ, {**others, **ours}, clear=True):
        try:
            return GatewaySettings()
        except ValidationError as exc:
            raise AssertionError(f"{where}: the gateway refuses these settings: {exc}") from None


def parse_command(args: Sequence[str], where: str) -> argparse.Namespace:
    """``switchyard ARGS`` parsed by the real command's parser; AssertionError with its message if it refuses them."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return command_parser().parse_args(list(args))
    except SystemExit:
        raise AssertionError(f"{where}: `switchyard {shlex.join(args)}` is refused: {errors.getvalue()}") from None


def triton_endpoints(url: str) -> list[tuple[str, int]]:
    """``(host, port)`` of each endpoint a ``triton_url`` names: ``h:p,h:p`` or ``dns:///h:p``."""
    endpoints = []
    for part in url.split(","):
        address = part.strip().removeprefix("dns:///")
        host, _, port = address.rpartition(":")
        assert host and port.isdigit(), f"triton_url endpoint {part!r} is not host:port"
        endpoints.append((host, int(port)))
    return endpoints


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for keyword, rest in _final_stage():
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_value(keyword: str) -> str:
    """The last ``keyword`` instruction of the final stage (USER, ENTRYPOINT, CMD, ...)."""
    values = [rest for k, rest in _final_stage() if k == keyword]
    assert values, f"Dockerfile: no {keyword} in the final stage"
    return values[-1]


def dockerfile_user() -> int:
    """The numeric user the image runs as."""
    user = dockerfile_value("USER").split(":")[0]
    assert user.isdigit(), f"Dockerfile: USER {user!r} should be numeric (Kubernetes checks runAsNonRoot on it)"
    return int(user)
