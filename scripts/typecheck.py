"""Type-checks the switchyard packages with mypy.

The source folders are mapped onto the ``switchyard`` package by
pyproject.toml (``proxy/`` is ``switchyard.proxy``, ...), a layout mypy cannot
follow on its own; this builds that package tree out of symbolic links in a
temporary folder and runs mypy there. Run: ``python scripts/typecheck.py``.
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
CHECKED = ["switchyard.proxy", "switchyard.client", "switchyard.server"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "switchyard"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name, folder in PACKAGES.items():
            (package / name).symlink_to(ROOT / folder, target_is_directory=True)
        args = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent"]
        args += [f"-p{p}" for p in CHECKED]
        return subprocess.run(args, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
