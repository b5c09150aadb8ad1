"""The Dockerfile, read without building it: its environment, user and command are ones the gateway accepts."""

from __future__ import annotations

import json

from switchyard.proxy.settings import GatewaySettings

from .contract import dockerfile_env, dockerfile_user, dockerfile_value, gateway_settings, parse_command


def test_image_environment_and_command_are_the_gateway_s() -> None:
    env = dockerfile_env()
    settings = gateway_settings(env, "Dockerfile ENV")
    defaults = GatewaySettings()
    assert (settings.port, settings.metrics_port) == (defaults.port, defaults.metrics_port)
    assert settings.host == settings.metrics_host == "0.0.0.0", "a container's ports must listen on every address"
    exposed = {int(p) for p in dockerfile_value("EXPOSE").split()}
    assert {settings.port, settings.metrics_port} <= exposed
    assert dockerfile_user() != 0
    entrypoint, command = json.loads(dockerfile_value("ENTRYPOINT")), json.loads(dockerfile_value("CMD"))
    assert entrypoint[-1] == "switchyard" and entrypoint[0] == "tini", entrypoint
    args = parse_command(command, "Dockerfile CMD")
    assert args.command == "serve" and str(args.model_repository) == "/opt/switchyard/models"
