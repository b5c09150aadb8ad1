"""``switchyard init``: the project skeleton, its name filled in, its examples valid, nothing overwritten."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from switchyard.proxy.routes.schema import load_routes, parse_routes
from switchyard.server.cli import main as server_main
from switchyard.server.project_init import ProjectExists, init_project


def test_init_writes_the_project_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "Fraud Scoring"
    assert server_main(["init", str(folder)]) == 0
    assert "project fraud-scoring" in capsys.readouterr().out
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == ["Dockerfile", "README.md", "compose.yaml", "k8s/deployment.yaml", "models/.gitkeep", "routes.toml"]
    assert load_routes(folder / "routes.toml").routes == []  # serve starts on it at once
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    assert compose["name"] == "fraud-scoring"
    assert compose["services"]["gateway"]["command"][-1] == "/project/models"
    deployment, service = yaml.safe_load_all((folder / "k8s" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "fraud-scoring"
    assert 'CMD ["serve", "--config", "/opt/fraud-scoring/routes.toml"' in (folder / "Dockerfile").read_text()
    assert "{{" not in "".join(p.read_text() for p in folder.rglob("*") if p.is_file())


def test_the_commented_examples_are_valid_routes(tmp_path: Path) -> None:
    init_project(tmp_path / "p", "p")
    text = (tmp_path / "p" / "routes.toml").read_text()
    examples = "\n".join(line[2:] for line in text.splitlines() if re.match(r"# (\[|\w+ =)", line))
    routes = parse_routes(examples, "routes.toml").routes
    assert sorted(r.kind for r in routes) == ["parallel", "progressive", "serial", "single"]


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "routes.toml").write_text("mine\n")
    with pytest.raises(ProjectExists, match="routes.toml"):
        init_project(tmp_path)
    assert server_main(["init", str(tmp_path), "--name", "Bad_Name"]) == 2
    assert "--name 'Bad_Name'" in capsys.readouterr().err
    assert (tmp_path / "routes.toml").read_text() == "mine\n"
