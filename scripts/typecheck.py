"""Type-checks the switchyard packages with mypy --strict (``[tool.mypy]`` in pyproject.toml).

The source folders are mapped onto the ``switchyard`` package by
pyproject.toml (``proxy/`` is ``switchyard.proxy``, ``protos/switchyard/v1`` is
``switchyard.v1``, ...). mypy finds modules by their folders and cannot follow
that mapping (nor the import hook of an editable install), so this builds the
package tree out of symbolic links in a temporary folder and runs mypy there.
Run: ``python scripts/typecheck.py`` (the test suite does, in tests/test_repository.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "proxy": "proxy",
    "client": "client_sdk",
    "server": "server",
    "models": "triton_models",
    "v1": "protos/switchyard/v1",
}
CHECKED = ["switchyard.proxy", "switchyard.client", "switchyard.server", "switchyard.v1", "switchyard.models"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "switchyard"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name, folder in PACKAGES.items():
            (package / name).symlink_to(ROOT / folder, target_is_directory=True)
        args = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        args += [f"-p{p}" for p in CHECKED]
        return subprocess.run(args, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
