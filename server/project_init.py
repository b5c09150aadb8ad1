"""``switchyard init DIR``: a ready project for a user's own models, generated from templates.

The project holds ``routes.toml`` (a commented example of each route kind; it
parses as a file of no routes, so ``serve`` starts on it at once), an empty
model repository ``models/`` for ``switchyard models add``, and the files
that put the same in a container: ``Dockerfile`` (the switchyard image with
the project's routes and models built in), ``compose.yaml`` (the routes and
models mounted, so a model added on the host is served after a SIGHUP) and
``k8s/deployment.yaml``. Each is rendered from ``templates/project/`` with
Jinja2, the project's name filled in.

It does not write models or routes of its own; ``models add`` does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TEMPLATES = Path(__file__).with_name("templates") / "project"
PROJECT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""What a container image, a compose project and a Kubernetes object may all be called."""


class ProjectExists(Exception):
    """The folder already holds files ``init`` would write."""


def project_name(folder: Path) -> str:
    """The folder's name as a project name: lower case, runs of other characters as ``-``."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "switchyard-project"


def init_project(folder: Path, name: str | None = None) -> list[Path]:
    """Writes the project into ``folder`` (created if missing); the files written. Never overwrites a file."""
    import jinja2

    name = name or project_name(folder)
    if not PROJECT_NAME.match(name):
        raise ValueError(f"--name {name!r}: use lower-case letters, digits and -, at most 63 characters")
    templates = sorted(TEMPLATES.rglob("*.j2"))
    targets = {t: folder / t.relative_to(TEMPLATES).with_suffix("") for t in templates}
    clashes = [str(path) for path in targets.values() if path.exists()]
    if clashes:
        raise ProjectExists(f"{folder} already has {', '.join(clashes)}; choose an empty folder")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    written = []
    for template, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        text = environment.get_template(template.relative_to(TEMPLATES).as_posix()).render(name=name)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    models = folder / "models"
    models.mkdir(exist_ok=True)
    (models / ".gitkeep").touch()
    return written


def init_command(args: argparse.Namespace) -> int:
    try:
        written = init_project(args.folder, args.name)
    except (ProjectExists, ValueError) as exc:
        print(f"switchyard: error: {exc}", file=sys.stderr)
        return 2
    folder: Path = args.folder
    print(f"switchyard: project {args.name or project_name(folder)} in {folder}:")
    for path in written:
        print(f"  {path.relative_to(folder)}")
    print("  models/ (empty model repository)")
    print("next:")
    print(f"  switchyard models add MODEL.onnx --name NAME --repository {folder / 'models'} "
          f"--route-file {folder / 'routes.toml'}")  # fmt: skip
    print(f"  switchyard serve --config {folder / 'routes.toml'} --model-repository {folder / 'models'}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``init`` to the ``switchyard`` command."""
    i = sub.add_parser("init", help="a ready project for your own models: routes, model repository, container files")
    i.add_argument("folder", type=Path, help="where to write it (created if missing; must not hold its files)")
    i.add_argument("--name", help="the project's name (default: the folder's name)")
    i.set_defaults(func=init_command)
