"""The ``switchyard`` command: ``batch`` from the SDK, ``serve`` and ``models`` from the server when installed.

The SDK installs without the server stack (Triton client, uvloop, Redis,
pydantic, ...); there ``switchyard batch`` works (with the ``batch`` extra;
without it, it says what to install) and the server's commands say what to
install. With the server installed, its commands are added from
``switchyard.server.cli``, so the gateway and the SDK share one command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from switchyard.client.batch.cli import add_parser as add_batch_parser

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL_ENV = "SWITCHYARD_LOG_LEVEL"
PLAYGROUND_TARGET_ENV = "SWITCHYARD_PLAYGROUND_TARGET"
"""The gateway the playground calls (``switchyard playground --target`` sets it for the app)."""
PLAYGROUND_MISSING = "the playground command needs Streamlit: pip install 'switchyard[playground]'"
SERVER_MISSING = "the {command} command needs the server: pip install 'switchyard[server]' (or 'switchyard[triton]')"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description="gRPC inference gateway in front of Triton")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    try:
        from switchyard.server.cli import add_commands
    except ImportError as exc:
        for command in ("serve", "triton", "config", "models"):
            stand_in = sub.add_parser(command, help=f"(needs the server extra: {exc.name} is not installed)")
            stand_in.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            stand_in.set_defaults(func=lambda _a, c=command: _missing(c))
    else:
        add_commands(sub)
    add_batch_parser(sub)
    play = sub.add_parser("playground", help="a web UI to try a gateway's routes and jobs (the playground extra)")
    play.add_argument(
        "--target", default=os.environ.get(PLAYGROUND_TARGET_ENV, "localhost:8500"), help="the gateway, host:port"
    )
    play.add_argument("--address", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    play.add_argument("--port", type=int, default=8501, help="port of the UI (default 8501)")
    play.set_defaults(func=playground)
    add_log_level(p)
    return p


def version() -> str:
    """The installed distribution's version (``unknown`` when run from sources that were never installed)."""
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def add_log_level(p: argparse.ArgumentParser) -> None:
    """``--log-level`` on ``p`` and on every (nested) subcommand, so it may come before or after the command.

    Only the top level has a default (``SWITCHYARD_LOG_LEVEL``, else INFO): a
    subcommand sets it only when given there.
    """
    for parser, top in _parsers(p):
        parser.add_argument(
            "--log-level",
            type=str.upper,
            choices=LOG_LEVELS,
            default=None if top else argparse.SUPPRESS,
            help=f"logging threshold (default: {LOG_LEVEL_ENV} or INFO)",
        )


def _parsers(p: argparse.ArgumentParser, top: bool = True) -> list[tuple[argparse.ArgumentParser, bool]]:
    found = [(p, top)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases name one parser twice
                found += _parsers(child, top=False)
    return found


def log_level(p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The level from the command line, else from ``SWITCHYARD_LOG_LEVEL`` (a usage error when that is wrong)."""
    if args.log_level is not None:
        return str(args.log_level)
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    if level not in LOG_LEVELS:
        p.error(f"{LOG_LEVEL_ENV}={level!r} is not a log level (choose from {', '.join(LOG_LEVELS)})")
    return level


def playground(args: argparse.Namespace) -> int:
    """Runs ``switchyard/client/playground.py`` with Streamlit until interrupted."""
    if importlib.util.find_spec("streamlit") is None:
        print(f"switchyard: error: {PLAYGROUND_MISSING}", file=sys.stderr)
        return 1
    app = Path(__file__).with_name("playground.py")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address]
    command += ["--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    try:
        return subprocess.call(command, env={**os.environ, PLAYGROUND_TARGET_ENV: args.target})
    except KeyboardInterrupt:
        return 130


def _missing(command: str) -> int:
    print(f"switchyard: error: {SERVER_MISSING.format(command=command)}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    args.log_level = log_level(p, args)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
