"""``switchyard models list | remove`` on a repository, and the printed route."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.models.onnx_import import AddOptions, add_model
from switchyard.proxy.routes.schema import parse_routes
from switchyard.server.cli import main as server_main
from switchyard.server.model_commands import route_text
from tests.models.onnx_graphs import two_inputs


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    add_model(two_inputs(tmp_path / "v1.onnx"), repo, AddOptions(name="pair"))
    add_model(two_inputs(tmp_path / "v2.onnx", scale=2.0), repo, AddOptions(name="pair", version="next"))
    return repo


def test_list_shows_models_and_versions(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["models", "list", "--repository", str(repository)]) == 0
    out = capsys.readouterr().out
    assert "1 model(s)" in out and "pair  versions 1, 2" in out


def test_remove_a_version_then_the_model(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["models", "remove", "pair", "--version", "1", "--repository", str(repository)]) == 0
    assert sorted(p.name for p in (repository / "pair").iterdir()) == ["2", "config.pbtxt"]
    assert server_main(["models", "remove", "pair", "--version", "1", "--repository", str(repository)]) == 2
    assert "has no version 1" in capsys.readouterr().err
    assert server_main(["models", "remove", "pair", "--repository", str(repository)]) == 0
    assert not (repository / "pair").exists()
    assert server_main(["models", "remove", "pair", "--repository", str(repository)]) == 2
    assert "no model 'pair'" in capsys.readouterr().err


def test_the_printed_route_parses_and_can_pin(tmp_path: Path) -> None:
    added = add_model(
        two_inputs(tmp_path / "m.onnx", batch=2), tmp_path / "r", AddOptions(name="pair", max_batch_size=0)
    )
    (route,) = parse_routes(route_text(added, "sums", pin=True), "routes.toml").routes
    assert (route.name, route.models(), getattr(route, "version", None)) == ("sums", ["pair"], "1")
    assert [(i.name, i.shape) for i in route.inputs or []] == [("a", [2, 3]), ("b", [2, 3])]  # unbatched: no -1


def test_reload_of_an_absent_gateway_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(["reload", "--address", "127.0.0.1:1", "--timeout-s", "2"]) == 1
    assert "reload refused (UNAVAILABLE)" in capsys.readouterr().err
