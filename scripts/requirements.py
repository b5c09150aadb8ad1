"""Prints the requirements of the package with the given extras, one a line.

Run: ``python scripts/requirements.py triton batch``.

Extras that name the package itself (``switchyard[server]``) are expanded
here, so the list can be installed before the package (the container image
installs its dependencies in a layer of their own, rebuilt only when
pyproject.toml changes); pip would otherwise look the name up on PyPI,
where ``switchyard`` is another project.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    own = re.compile(rf"{re.escape(project['name'])}\[([^\]]+)\]")
    seen: set[str] = set()

    def expand(names: list[str]) -> Iterator[str]:
        for name in names:
            if name in seen:
                continue
            if name not in optional:
                raise SystemExit(f"no extra {name!r} in {pyproject.name} (extras: {', '.join(sorted(optional))})")
            seen.add(name)
            for requirement in optional[name]:
                match = own.fullmatch(requirement.replace(" ", ""))
                if match:
                    yield from expand(match.group(1).split(","))
                else:
                    yield requirement

    return list(dict.fromkeys([*project["dependencies"], *expand(extras)]))


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
