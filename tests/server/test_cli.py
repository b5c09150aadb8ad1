"""The ``switchyard`` command line without serving: version, log level, every setting as a flag, ``config check``."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from switchyard.client.cli import log_level, main, parser
from switchyard.models import BUNDLED_ROUTES
from switchyard.proxy.settings import GatewaySettings
from switchyard.server import cli as server_cli
from switchyard.server.settings_cli import env_of, flag_of, load_settings

SWITCHYARD = os.path.join(sys.exec_prefix, "bin", "switchyard")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHYARD, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("SWITCHYARD_"):
            monkeypatch.delenv(key)


def serve_settings(*argv: str) -> GatewaySettings:
    """The settings ``switchyard serve ARGV`` would run with."""
    args = parser().parse_args(["serve", *argv])
    return server_cli._settings(args)


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"switchyard {importlib.metadata.version('switchyard')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "config", "check", str(BUNDLED_ROUTES)],
        ["config", "check", str(BUNDLED_ROUTES), "--log-level", "debug"],
        ["config", "--log-level", "DEBUG", "check", str(BUNDLED_ROUTES)],
    ],
)
def test_log_level_before_or_after_the_command(argv: list[str]) -> None:
    assert parser().parse_args(argv).log_level == "DEBUG"


def test_log_level_after_the_command_wins_and_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    p = parser()
    assert p.parse_args(["--log-level", "error", "serve", "--log-level", "warning"]).log_level == "WARNING"
    monkeypatch.setenv("SWITCHYARD_LOG_LEVEL", "warning")
    args = p.parse_args(["serve"])
    assert args.log_level is None  # resolved by main: the environment, else INFO
    assert log_level(p, args) == "WARNING"


@pytest.mark.parametrize("argv", [["--log-level", "loud", "serve"], ["serve", "--log-level", "loud"]])
def test_bad_log_level_is_a_usage_error(argv: list[str]) -> None:
    done = run(*argv)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "argument --log-level: invalid choice: 'LOUD'" in done.stderr
    assert done.stderr.startswith("usage: switchyard")


def test_bad_log_level_in_the_environment_is_a_usage_error() -> None:
    done = run("config", "check", str(BUNDLED_ROUTES), env={"SWITCHYARD_LOG_LEVEL": "loud"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "SWITCHYARD_LOG_LEVEL='LOUD' is not a log level" in done.stderr


def test_serve_help_lists_every_setting_and_its_environment_variable() -> None:
    done = run("serve", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    missing = [name for name in GatewaySettings.model_fields if flag_of(name) not in text]
    assert missing == []
    assert [name for name in GatewaySettings.model_fields if env_of(name) not in text] == []
    assert "--settings FILE" in text
    assert "flag > environment variable > settings file > default" in text
    assert "Triton's gRPC address (host:port)" in text


def _sample(name: str, info: Any) -> tuple[str, Any]:
    """A value for setting ``name`` that differs from its default, as typed on the line and as parsed."""
    special = {"triton_url": ("a:8001,b:8001", "a:8001,b:8001"), "jobs_store": ("sqlite", "sqlite")}
    if name in special:
        return special[name]
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    default = info.default if info.default_factory is None else None
    if base is bool:
        return ("false", False) if default else ("true", True)
    if typing.get_origin(base) is Literal:
        choice = next(str(c) for c in typing.get_args(base) if c != default)
        return choice, choice
    if typing.get_origin(base) is tuple:
        return "a.Service, b.Other", ("a.Service", "b.Other")
    if base is int:
        value = (default or 4) + 1
        return str(value), value
    if base is float:
        value = (default or 1.0) * 1.5
        return str(value), value
    if base is Path:
        return "/srv/x.toml", Path("/srv/x.toml")
    return "example.internal", "example.internal"


@pytest.mark.parametrize("name", list(GatewaySettings.model_fields))
def test_every_setting_is_a_flag_of_serve(name: str) -> None:
    typed, expected = _sample(name, GatewaySettings.model_fields[name])
    if isinstance(expected, bool):  # --name / --no-name
        settings = serve_settings(flag_of(name) if expected else "--no-" + flag_of(name)[2:])
    else:
        settings = serve_settings(flag_of(name), typed)
    assert getattr(settings, name) == expected
    assert name in settings.model_fields_set


@pytest.mark.parametrize("name", list(GatewaySettings.model_fields))
def test_every_setting_is_a_key_of_the_settings_file(name: str, tmp_path: Path) -> None:
    typed, expected = _sample(name, GatewaySettings.model_fields[name])
    file = tmp_path / "settings.toml"
    value: Any = expected
    if isinstance(expected, Path):
        value = str(expected)
    elif isinstance(expected, tuple):
        value = list(expected)
    file.write_text(f"{name} = {_toml(value)}\n")
    assert getattr(serve_settings("--settings", str(file)), name) == expected


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "settings.toml"
    file.write_text("port = 9001\ngrace_s = 3.0\nworkers = 2\n")
    monkeypatch.setenv("SWITCHYARD_GRACE_S", "4.0")
    monkeypatch.setenv("SWITCHYARD_WORKERS", "3")
    settings = serve_settings("--settings", str(file), "--workers", "4")
    assert settings.workers == 4  # flag
    assert settings.grace_s == 4.0  # environment over the file
    assert settings.port == 9001  # file over the default
    assert settings.host == "0.0.0.0"  # default


def test_older_flag_spellings_and_unsetting() -> None:
    settings = serve_settings(
        "--config", "/srv/routes.toml", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"
    )
    assert settings.routes_file == Path("/srv/routes.toml")
    assert (settings.tls_cert_file, settings.tls_key_file) == (Path("c.pem"), Path("k.pem"))
    assert settings.tls_client_ca_file == Path("ca.pem")
    assert serve_settings("--metrics-port", "none").metrics_port is None
    assert serve_settings("--no-metrics").metrics_port is None
    assert serve_settings("--no-jobs").jobs_store == "off"
    assert "triton_url" not in serve_settings().model_fields_set  # serve then starts its own Triton


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
        (["--jobs-store", "disk"], "argument --jobs-store: invalid choice: 'disk'"),
        (["--grace-s", "soon"], "argument --grace-s: invalid float value: 'soon'"),
    ],
)
def test_bad_flag_values_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["serve", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_out_of_range_setting_is_one_line_naming_flag_and_variable() -> None:
    done = run("serve", "--port", "70000")
    assert done.returncode == 2
    assert done.stderr == (
        "switchyard: error: setting port (--port, SWITCHYARD_PORT): "
        "Input should be less than or equal to 65535, got 70000\n"
    )
    done = run("serve", env={"SWITCHYARD_JOBS_STORE": "redis"})
    assert done.returncode == 2
    assert done.stderr == (
        "switchyard: error: settings: jobs_store = 'redis' needs jobs_redis_url (redis://host:port/db)\n"
    )


def test_settings_file_mistakes(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text("prot = 9000\n")
    with pytest.raises(Exception, match=rf"^{typo}: unknown setting 'prot'; did you mean 'port'\?$"):
        load_settings({}, typo)
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 99999\n")
    done = run("serve", "--settings", str(bad))
    assert done.returncode == 2
    assert done.stderr == (
        f"switchyard: error: setting port (--port, SWITCHYARD_PORT or {bad}): "
        "Input should be less than or equal to 65535, got 99999\n"
    )
    done = run("serve", "--settings", str(tmp_path / "absent.toml"))
    assert done.returncode == 2
    assert done.stderr == (
        f"switchyard: error: cannot read settings file {tmp_path / 'absent.toml'} (--settings): "
        "No such file or directory\n"
    )


def test_config_check_accepts_a_good_routes_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(BUNDLED_ROUTES)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"switchyard: {BUNDLED_ROUTES}: 10 routes OK (digits, digits_8x8,")


def test_config_check_names_the_mistake(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[routes]]\nname = "r"\nmodle = "digits_logreg"\n')
    done = run("config", "check", str(routes))
    assert done.returncode == 2
    assert done.stderr == (
        f"switchyard: error: {routes}: routes[r].model: Field required; "
        "routes[r].modle: Extra inputs are not permitted\n"
    )
    done = run("config", "check", str(tmp_path / "absent.toml"))
    assert done.returncode == 2
    assert done.stderr == (
        f"switchyard: error: cannot read routes file {tmp_path / 'absent.toml'}: No such file or directory\n"
    )


def test_config_check_checks_a_settings_file_too(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text("workers = 0\n")
    done = run("config", "check", str(BUNDLED_ROUTES), "--settings", str(settings))
    assert done.returncode == 2
    assert "setting workers (--workers, SWITCHYARD_WORKERS or" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_module_alone_takes_a_log_level() -> None:
    p = server_cli.parser()
    assert isinstance(p, argparse.ArgumentParser)
    assert p.parse_args(["--log-level", "debug", "models", "build"]).log_level == "DEBUG"


def test_settings_table_in_the_docs_is_fresh() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "settings_doc.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_without_the_server_its_commands_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = __import__

    def no_server(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "switchyard.server.cli":
            raise ImportError("no server", name="uvloop")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_server)
    p = parser()
    for command in ("serve", "triton", "config", "models"):
        assert p.parse_args([command, "--log-level", "debug"]).command == command
    args = p.parse_args(["config", "check", "routes.toml"])
    assert args.func(args) == 1
    assert capsys.readouterr().err == (
        "switchyard: error: the config command needs the server: pip install 'switchyard[server]' "
        "(or 'switchyard[triton]')\n"
    )


def test_config_check_checks_ops_and_their_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[routes]]\nname = "d"\nmodel = "digits_logreg"\npre = [{ op = "nosuchop" }]\n')
    assert main(["config", "check", str(routes)]) == 2
    assert capsys.readouterr().err.startswith("switchyard: error: routes[d].pre[0].op: unknown op 'nosuchop' (known: ")
    routes.write_text('[[routes]]\nname = "d"\nmodel = "digits_logreg"\npost = [{ op = "topk", tensor = "p", kk = 3 }]')
    assert main(["config", "check", str(routes)]) == 2
    assert "routes[d].post[0].kk: Extra inputs are not permitted" in capsys.readouterr().err


def test_relative_paths_in_a_settings_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "settings.toml"
    file.write_text('routes_file = "routes.toml"\ntls_cert_file = "/etc/tls/cert.pem"\n')
    settings = serve_settings("--settings", str(file))
    assert settings.routes_file == tmp_path / "conf" / "routes.toml"
    assert settings.tls_cert_file == Path("/etc/tls/cert.pem")
