"""The commands for users' own models: ``switchyard models add | list | remove`` and ``switchyard reload``.

``models add`` writes an ONNX file as a Triton model folder into the user's
model repository (``switchyard.models.onnx_import`` does the reading and the
writing) and prints a route for it, or appends it to ``--route-file``.
``models list`` shows the repository's models and versions, and with
``--triton-url`` their state in that Triton; ``models remove`` deletes a
model or one version (unloading it first from ``--triton-url``).
``reload`` asks a running gateway to read its routes file and the models
again (``switchyard.v1.Admin/Reload``), as ``SIGHUP`` to ``switchyard serve``
does.

It owns the command lines and what they print; not the model folder's form
(``onnx_import``, ``build``) nor how a gateway reloads (``proxy.reloading``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from switchyard.models.onnx_import import AddedModel, AddOptions, ModelAddError, add_model, datatype, parse_dims
from switchyard.proxy.backend.repository import ModelState, TritonRepository
from switchyard.proxy.errors import GatewayError
from switchyard.v1 import admin_pb2, admin_pb2_grpc

REPOSITORY_ENV = "SWITCHYARD_MODEL_REPOSITORY"


def default_user_repository() -> Path:
    """The user's own model repository: ``$SWITCHYARD_MODEL_REPOSITORY``, else ``~/.local/share/switchyard/models``."""
    if os.environ.get(REPOSITORY_ENV):
        return Path(os.environ[REPOSITORY_ENV])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "switchyard" / "models"


def route_text(added: AddedModel, route_name: str | None = None, *, pin: bool = False) -> str:
    """A routes-file entry that serves ``added`` with its inputs declared (following the latest version)."""
    lines = [
        "[[routes]]",
        f'name = "{route_name or added.name}"',
        f'model = "{added.name}"',
        f'description = "{added.name} (added with switchyard models add)"',
    ]
    lines.append(f'version = "{added.version}"' if pin else '# version = "1"  # pin a version; unset: the latest')
    for spec in added.inputs:
        shape = ", ".join(str(d) for d in added.client_shape(spec))
        lines += ["[[routes.inputs]]", f'name = "{spec.name}"', f'datatype = "{datatype(spec)}"', f"shape = [{shape}]"]
    return "\n".join(lines) + "\n"


def _options(args: argparse.Namespace) -> AddOptions:
    shapes = dict(parse_dims(text, "--shape") for text in args.shape)
    reshapes = dict(parse_dims(text, "--reshape") for text in args.reshape)
    return AddOptions(
        name=args.name,
        max_batch_size=args.max_batch,
        instances=args.instances,
        delay_us=args.delay_us,
        version=args.version,
        version_policy=args.version_policy,
        shapes=shapes,
        reshapes=reshapes,
    )


def models_add(args: argparse.Namespace) -> int:
    repository: Path = args.repository or default_user_repository()
    try:
        added = add_model(args.onnx, repository, _options(args))
    except ModelAddError as exc:
        print(f"switchyard: error: {exc}", file=sys.stderr)
        return 2
    what = "model" if added.new_model else "version"
    print(f"switchyard: added {what} {added.name} version {added.version} in {added.folder}")
    print(f"  versions: {', '.join(added.versions)}; max_batch_size {added.max_batch_size}")
    for role, specs in (("input", added.inputs), ("output", added.outputs)):
        for spec in specs:
            print(f"  {role} {spec.name}: {datatype(spec)} {added.client_shape(spec)}")
    if not added.new_model:
        print("  reload the gateway (switchyard reload, or SIGHUP to switchyard serve) to serve it")
        return 0
    text = route_text(added, args.route_name)
    if args.route_file is not None:
        with args.route_file.open("a", encoding="utf-8") as out:
            existing = args.route_file.stat().st_size
            out.write(("\n" if existing else "") + text)
        print(f"  route {args.route_name or added.name} appended to {args.route_file}; reload the gateway to serve it")
    else:
        print("  a route for it (add it to your routes file, then reload the gateway):\n")
        print(text)
    return 0


async def _states(url: str) -> dict[str, list[ModelState]]:
    found: dict[str, list[ModelState]] = {}
    for state in await TritonRepository(url).index():
        found.setdefault(state.name, []).append(state)
    return found


def models_list(args: argparse.Namespace) -> int:
    repository: Path = args.repository or default_user_repository()
    states = asyncio.run(_states(args.triton_url)) if args.triton_url else {}
    folders = sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()) if repository.is_dir() else []
    print(f"model repository {repository}: {len(folders)} model(s)")
    for folder in folders:
        versions = sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
        line = f"  {folder.name}  versions {', '.join(versions) or 'none'}"
        if args.triton_url:
            ready = sorted((s.version for s in states.get(folder.name, []) if s.state == "READY"), key=int)
            line += f"  ready in Triton: {', '.join(ready) or 'none'}"
        print(line)
    return 0


async def _unload(url: str, name: str) -> None:
    await TritonRepository(url).unload(name)


def models_remove(args: argparse.Namespace) -> int:
    repository: Path = args.repository or default_user_repository()
    folder = repository / args.name
    if not (folder / "config.pbtxt").is_file():
        print(f"switchyard: error: no model {args.name!r} in {repository}", file=sys.stderr)
        return 2
    if args.version is not None:
        target = folder / str(args.version)
        if not target.is_dir():
            print(f"switchyard: error: model {args.name!r} has no version {args.version}", file=sys.stderr)
            return 2
        shutil.rmtree(target)
        print(f"switchyard: removed version {args.version} of {args.name}; reload the gateway to stop serving it")
        return 0
    if args.triton_url:
        asyncio.run(_unload(args.triton_url, args.name))
    shutil.rmtree(folder)
    print(f"switchyard: removed model {args.name} from {repository}")
    return 0


async def _reload(args: argparse.Namespace) -> admin_pb2.ReloadResponse:
    if args.tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(args.tls_ca.read_bytes())
        channel = grpc.aio.secure_channel(args.address, credentials)
    else:
        channel = grpc.aio.insecure_channel(args.address)
    key = args.api_key or os.environ.get("SWITCHYARD_API_KEY")
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    async with channel:
        reply: admin_pb2.ReloadResponse = await admin_pb2_grpc.AdminStub(channel).Reload(
            admin_pb2.ReloadRequest(), timeout=args.timeout_s, metadata=metadata
        )
    return reply


def reload(args: argparse.Namespace) -> int:
    try:
        reply = asyncio.run(_reload(args))
    except grpc.aio.AioRpcError as exc:
        print(f"switchyard: reload refused ({exc.code().name}): {exc.details()}", file=sys.stderr)
        return 1
    print(f"switchyard: reloaded; {len(reply.routes)} routes: {', '.join(reply.routes)}")
    for label, names in (
        ("added", reply.added),
        ("removed", reply.removed),
        ("changed", reply.changed),
        ("models loaded", reply.loaded_models),
    ):
        if names:
            print(f"  {label}: {', '.join(names)}")
    for model, version in sorted(reply.model_versions.items()):
        print(f"  {model}: version {version}")
    return 0


def _guarded(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    try:
        return run(args)
    except ModelAddError as exc:
        print(f"switchyard: error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"switchyard: error: {exc.message}", file=sys.stderr)
        return 1


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    models: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Adds ``models add|list|remove`` to ``models`` and ``reload`` to ``sub``."""
    repo_help = f"the model repository (default: ${REPOSITORY_ENV}, else ~/.local/share/switchyard/models)"
    a = models.add_parser("add", help="write an ONNX model as a Triton model folder (or a new version of one)")
    a.add_argument("onnx", type=Path, help="the ONNX file")
    a.add_argument("--name", required=True, help="the model's name in Triton and in routes")
    a.add_argument("--repository", type=Path, help=repo_help)
    a.add_argument("--version", help="version number, or 'next' (default: 1 for a new model)")
    a.add_argument(
        "--version-policy", help="which versions Triton serves: all (default), latest, latest:N or specific:N,M"
    )
    a.add_argument("--max-batch", type=int, help="rows per batch Triton may form (default 64; 0: no batching)")
    a.add_argument("--instances", type=int, help="model instances Triton runs (default 1)")
    a.add_argument("--delay-us", type=int, help="dynamic batching's queue delay in microseconds (default 1000)")
    a.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="TENSOR=DIMS",
        help="per-row dimensions of a tensor the graph leaves dynamic (e.g. text=16; -1 keeps one variable)",
    )
    a.add_argument(
        "--reshape",
        action="append",
        default=[],
        metavar="TENSOR=DIMS",
        help="per-row dimensions clients see, when they differ from the model's own (same element count)",
    )
    a.add_argument("--route-file", type=Path, help="append the model's route to this routes file")
    a.add_argument("--route-name", help="the route's name (default: the model's)")
    a.set_defaults(func=lambda args: _guarded(args, models_add))

    ls = models.add_parser("list", help="the repository's models and versions (and their state in a Triton)")
    ls.add_argument("--repository", type=Path, help=repo_help)
    ls.add_argument(
        "--triton-url",
        default=os.environ.get("SWITCHYARD_TRITON_URL"),
        help="show which versions this Triton (host:port) has ready; serve logs its local Triton's "
        "(default: SWITCHYARD_TRITON_URL)",
    )
    ls.set_defaults(func=lambda args: _guarded(args, models_list))

    rm = models.add_parser("remove", help="delete a model (or one version) from the repository")
    rm.add_argument("name")
    rm.add_argument("--repository", type=Path, help=repo_help)
    rm.add_argument("--version", type=int, help="remove only this version")
    rm.add_argument("--triton-url", help="unload the model from this Triton (host:port) first")
    rm.set_defaults(func=lambda args: _guarded(args, models_remove))

    r = sub.add_parser("reload", help="have a running gateway read its routes file and models again")
    r.add_argument("--address", default="127.0.0.1:8500", help="the gateway (default 127.0.0.1:8500)")
    r.add_argument("--api-key", help="an API key allowed every route (also SWITCHYARD_API_KEY)")
    r.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) of a gateway serving TLS")
    r.add_argument("--timeout-s", type=float, default=300.0, help="how long to wait for the reload (default 300)")
    r.set_defaults(func=lambda args: _guarded(args, reload))
