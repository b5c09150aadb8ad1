"""The ``switchyard`` command: ``batch`` from the SDK, ``serve`` and ``models`` from the server when installed.

The SDK installs without the server stack (Triton client, uvloop, Redis,
pydantic, ...); there ``switchyard batch`` works (with the ``batch`` extra;
without it, it says what to install) and the server's commands say what to
install. With the server installed, its commands are added from
``switchyard.server.cli``, so the gateway and the SDK share one command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from switchyard.client.batch.cli import add_parser as add_batch_parser

SERVER_MISSING = "the {command} command needs the server: pip install 'switchyard[server]' (or 'switchyard[triton]')"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchyard", description="gRPC inference gateway in front of Triton")
    p.add_argument("--log-level", default=os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)
    try:
        from switchyard.server.cli import add_commands
    except ImportError as exc:
        for command in ("serve", "models"):
            stand_in = sub.add_parser(command, help=f"(needs the server extra: {exc.name} is not installed)")
            stand_in.set_defaults(func=lambda _a, c=command: _missing(c))
    else:
        add_commands(sub)
    add_batch_parser(sub)
    return p


def _missing(command: str) -> int:
    print(f"switchyard: error: {SERVER_MISSING.format(command=command)}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
