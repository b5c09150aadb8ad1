"""Writes the settings table of docs/operations-and-settings.md from proxy/settings.py.

Run: ``python scripts/settings_doc.py`` after adding or changing a setting;
``--check`` exits 1 when the page is stale (tests/server/test_cli.py checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from switchyard.server.settings_cli import markdown_table

PAGE = Path(__file__).resolve().parent.parent / "docs" / "operations-and-settings.md"
BEGIN = "<!-- settings table: begin -->"
END = "<!-- settings table: end -->"


def render(page: str) -> str:
    """``page`` with the text between the markers replaced by the current table."""
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    current = PAGE.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{PAGE.name} is stale: run python scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
