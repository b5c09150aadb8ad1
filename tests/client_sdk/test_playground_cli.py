"""`switchyard playground`: Streamlit runs the bundled app against the gateway given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from switchyard.client import cli


def test_runs_streamlit_on_the_app_with_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def call(command: list[str], env: dict[str, str]) -> int:
        calls.append((command, env))
        return 0

    monkeypatch.setattr(cli.subprocess, "call", call)
    assert cli.main(["playground", "--target", "gw:9000", "--port", "8600"]) == 0
    ((command, env),) = calls
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]).name == "playground.py" and Path(command[4]).is_file()
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert env[cli.PLAYGROUND_TARGET_ENV] == "gw:9000"


def test_without_streamlit_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "streamlit" else real(name, *args)

    monkeypatch.setattr(cli.importlib.util, "find_spec", find_spec)
    assert cli.main(["playground"]) == 1
    assert "pip install 'switchyard[playground]'" in capsys.readouterr().err
