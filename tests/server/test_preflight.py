"""The first-hour mistakes: ``switchyard serve`` says in one line which setting is wrong and what to do."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.client.cli import main
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.preflight import check_model_repository, check_redis, where_to_set
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)

SWITCHYARD = os.path.join(sys.exec_prefix, "bin", "switchyard")
NOWHERE = "127.0.0.1:1"
"""A Triton URL nothing answers on: serve must fail before it would wait for it."""


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SWITCHYARD_")}
    return subprocess.run(
        [SWITCHYARD, "serve", *args], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The message of a failed serve, checked to be one line, no traceback, a non-zero exit."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("switchyard: error: ")
    return lines[0].removeprefix("switchyard: error: ")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_grpc_port_taken(taken_port: int) -> None:
    message = one_line_error(serve("--host", "127.0.0.1", "--port", str(taken_port), "--triton-url", NOWHERE))
    assert message == (
        f"cannot listen on 127.0.0.1:{taken_port}: Address already in use; stop what listens there, "
        "or give another port with --port or SWITCHYARD_PORT (0: any free one)"
    )


def test_metrics_port_taken(taken_port: int) -> None:
    metrics = ("--metrics-host", "127.0.0.1", "--metrics-port", str(taken_port))
    done = serve("--port", "0", *metrics, "--triton-url", NOWHERE)
    assert one_line_error(done) == (
        f"cannot serve metrics on 127.0.0.1:{taken_port}: Address already in use; give another port with "
        "--metrics-port or SWITCHYARD_METRICS_PORT, 0 for any free one, or --no-metrics"
    )


def test_model_repository_missing(tmp_path: Path) -> None:
    missing = tmp_path / "models"
    message = one_line_error(serve("--port", "0", "--metrics-port", "0", "--model-repository", str(missing)))
    assert message == (
        f"model repository {missing} is not a directory (--model-repository): build the bundled models there "
        f"with `switchyard models build --out {missing}`, or leave out --model-repository to use them"
    )
    missing.mkdir()
    check_model_repository(missing)  # an empty one is fine: `switchyard models add` and a reload fill it


def test_triton_binary_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as without the triton extra
    for key in [k for k in os.environ if k.upper().startswith("SWITCHYARD_")]:
        monkeypatch.delenv(key)
    code = main(["serve", "--port", "0", "--metrics-port", "0", "--model-repository", str(tmp_path)])
    assert code == 1
    assert capsys.readouterr().err == (
        "switchyard: error: tritonserver binary not found: install the triton extra "
        "(pip install 'switchyard[triton]') or pass --triton-url\n"
    )


def test_redis_cache_unreachable() -> None:
    done = serve(
        *("--port", "0", "--metrics-port", "0", "--triton-url", NOWHERE),
        *("--cache-backend", "redis", "--redis-url", "redis://127.0.0.1:1/0"),
    )
    message = one_line_error(done)
    assert message.startswith("cannot reach Redis at redis://127.0.0.1:1/0 (redis_url, for cache_backend = redis): ")
    assert "Connection refused" in message
    assert message.endswith(
        "; start Redis there, give its URL with --redis-url or SWITCHYARD_REDIS_URL, or use --cache-backend memory"
    )


def test_redis_job_store_unreachable() -> None:
    done = serve(
        "--port", "0", "--metrics-port", "0", "--triton-url", NOWHERE, "--jobs-redis-url", "redis://127.0.0.1:1"
    )
    message = one_line_error(done)
    assert message.startswith("cannot reach Redis at redis://127.0.0.1:1 (jobs_redis_url, for jobs_store = auto): ")
    assert message.endswith(
        "start Redis there, give its URL with --jobs-redis-url or SWITCHYARD_JOBS_REDIS_URL, "
        "or leave --jobs-redis-url unset for the embedded SQLite store"
    )


def test_reachable_redis_passes(redis_server: RedisServer) -> None:  # noqa: F811
    settings = GatewaySettings(cache_backend="redis", redis_url=redis_server.url, jobs_redis_url=redis_server.url)
    asyncio.run(check_redis(settings))


def test_tls_files_unreadable(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    message = one_line_error(serve("--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)))
    assert message == (
        f"tls_cert_file {cert}: cannot read it: No such file or directory "
        "(set by --tls-cert-file or SWITCHYARD_TLS_CERT_FILE)"
    )
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("secret")
    key.chmod(0)
    if os.geteuid() != 0:  # root reads any file
        message = one_line_error(serve("--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)))
        assert message.startswith(f"tls_key_file {key}: cannot read it: Permission denied")


def test_messages_that_name_a_setting_say_where_to_set_it() -> None:
    assert where_to_set("api_keys_file keys.toml: not valid TOML") == (
        "api_keys_file keys.toml: not valid TOML (set by --api-keys-file or SWITCHYARD_API_KEYS_FILE)"
    )
    routes_message = "routes.toml: routes[r].model: Field required"
    assert where_to_set(routes_message) == routes_message


def test_routes_file_with_a_typo(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[routes]]\nname = "digits"\nmodel = "digits_logreg"\ncache = { ttl_s = 5, enabeld = true }\n')
    message = one_line_error(serve("--port", "0", "--config", str(routes), "--triton-url", NOWHERE))
    assert message.startswith(f"{routes}: routes[digits].cache.enabeld: Extra inputs are not permitted")
