"""The layers of the house: the gateway never imports the SDK, the SDK none of the server, the contract layer neither.

``switchyard.v1`` (stubs, tensor codec, channel options) is shared by both
sides; the SDK (``switchyard.client``) is what users install to call a
gateway, so the gateway (``proxy/``, ``server/``) must run without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The SDK installs without the server stack (`pip install switchyard`): none of it, and no gateway code. (Its
# `switchyard` command adds the server's commands when the server imports, and the batch runner takes uvloop
# when there: both guarded imports, proved by the fresh-environment test, tests/integration/test_sdk_install.py.)
SERVER_STACK = ("tritonclient", "redis", "pydantic", "pydantic_settings", "prometheus_client", "PIL", "xxhash")

FORBIDDEN = {
    "client_sdk": ("switchyard.proxy", "switchyard.models", *SERVER_STACK),
    "proxy": ("switchyard.client",),
    "server": ("switchyard.client",),
    "protos/switchyard/v1": ("switchyard.client", "switchyard.proxy", "switchyard.server", "switchyard.models"),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, relative ones included as written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if node.level == 0]
    return found


def offending(folder: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``path:line imports module`` for each import of a forbidden module (the first one named on each line)."""
    problems: dict[str, str] = {}
    for path in sorted((root / folder).rglob("*.py")):
        for line, module in imported_modules(path.read_text()):
            where = f"{path.relative_to(root)}:{line}"
            if where not in problems and any(module == f or module.startswith(f + ".") for f in forbidden):
                problems[where] = f"{where} imports {module}"
    return list(problems.values())


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_nothing_it_must_not(folder: str) -> None:
    assert offending(folder, FORBIDDEN[folder]) == []


def test_the_check_sees_every_form_of_import() -> None:
    source = "import switchyard.client\nfrom switchyard.client.tensors import x\nfrom switchyard import client\n"
    modules = [m for _, m in imported_modules(source)]
    assert "switchyard.client" in modules
    assert "switchyard.client.tensors" in modules
    assert modules.count("switchyard.client") == 2  # `from switchyard import client` too


def test_the_check_fails_on_an_offending_module(tmp_path: Path) -> None:
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "bad.py").write_text("import grpc\nfrom switchyard.client import Client\n")
    assert offending("proxy", FORBIDDEN["proxy"], tmp_path) == ["proxy/bad.py:2 imports switchyard.client"]
