"""``switchyard batch``: the command-line form of :class:`~switchyard.client.batch.BatchJob`.

Owns the subcommand's arguments and their translation into a job; prints the
summary on stdout. Exit status 0 when the job ran to the end (failed rows
are in the output with their error), 2 for bad arguments (TLS files that
cannot be read included), 1 when the job could not run (gateway unreachable,
unknown route, the ``batch`` extra not installed). Imports nothing beyond the
standard library and the SDK until the command runs, so ``switchyard --help``
works without the ``batch`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from switchyard.client.tls import Tls

from . import EXTRA_PACKAGES

BATCH_MISSING = "switchyard batch needs the batch extra: pip install 'switchyard[batch]'"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "batch",
        help="score a data set (Parquet, CSV, NumPy, SQL table) through a route, resumably",
        description="Scores every row of INPUT through ROUTE and writes predictions (or each row's error) next to "
        "it. Interrupted, the same command resumes from the checkpoint without scoring finished rows again.",
    )
    p.add_argument("input", help="a .parquet, .csv, .npy or .npz file; with --table a SQLite file or PostgreSQL URL")
    p.add_argument("--route", required=True, help="route to call")
    p.add_argument(
        "--gateway",
        default=os.environ.get("SWITCHYARD_GATEWAY", "localhost:8500"),
        help="gateway address host:port (default $SWITCHYARD_GATEWAY or localhost:8500)",
    )
    p.add_argument("--table", help="read this SQL table of INPUT")
    p.add_argument("--output", help="output file (.parquet, .csv, .npz) or, with --table, output table")
    p.add_argument("--columns", type=_names, help="feature columns, in order (default: all but the id column)")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="NAME=COL,COL",
        help="columns of one route input (repeat for routes with several inputs)",
    )
    p.add_argument("--outputs", type=_names, help="route outputs to keep (default: all)")
    p.add_argument("--id-column", help="column kept as the row id (default: the row's position, as row_id)")
    p.add_argument("--array", help="array of a .npz to score (default: its only array of 2 or more dimensions)")
    p.add_argument("--chunk-rows", type=int, default=256, help="rows per request (default 256)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--request-timeout-s", type=float, default=30.0, help="deadline of one request (default 30)")
    p.add_argument("--max-attempts", type=int, default=5, help="attempts per request on UNAVAILABLE (default 5)")
    p.add_argument("--max-rows-per-s", type=float, help="send at most this many rows per second")
    p.add_argument("--journal", help="checkpoint file (default: OUTPUT.journal)")
    p.add_argument("--restart", action="store_true", help="discard the checkpoint and score every row")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--api-key", default=os.environ.get("SWITCHYARD_API_KEY"), help="API key ($SWITCHYARD_API_KEY)")
    tls = p.add_argument_group("TLS", "the channel is plaintext unless one of these is given")
    tls.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs")
    tls.add_argument("--tls-ca", metavar="FILE", help="TLS, trusting the CAs of this PEM file")
    tls.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM), for mutual TLS; needs --tls-key")
    tls.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    p.set_defaults(func=run)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _inputs(specs: Sequence[str] | None) -> dict[str, list[str]] | None:
    if not specs:
        return None
    inputs: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, columns = spec.partition("=")
        if not sep or not name or not _names(columns):
            raise ValueError(f"--input takes NAME=COL,COL..., got {spec!r}")
        inputs[name.strip()] = _names(columns)
    return inputs


def _tls(args: argparse.Namespace) -> Tls | None:
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    return Tls.from_files(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)


def run(args: argparse.Namespace) -> int:
    from switchyard.client.errors import SwitchyardError

    try:
        from .engine import BatchOptions
        from .job import BatchJob
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRA_PACKAGES:
            raise
        print(f"switchyard batch: error: {BATCH_MISSING} ({exc.name} is not installed)", file=sys.stderr)
        return 1
    try:
        options = BatchOptions(
            chunk_rows=args.chunk_rows,
            concurrency=args.concurrency,
            request_timeout_s=args.request_timeout_s,
            max_attempts=args.max_attempts,
            max_rows_per_s=args.max_rows_per_s,
        )
        job = BatchJob(
            args.input,
            route=args.route,
            target=args.gateway,
            table=args.table,
            output=args.output,
            columns=args.columns,
            inputs=_inputs(args.inputs),
            outputs=args.outputs,
            id_column=args.id_column,
            array=args.array,
            options=options,
            journal=args.journal,
            restart=args.restart,
            progress=not args.no_progress,
            api_key=args.api_key,
            tls=_tls(args),
        )
        summary = job.run()
    except ValueError as exc:
        print(f"switchyard batch: error: {exc}", file=sys.stderr)
        return 2
    except SwitchyardError as exc:
        print(f"switchyard batch: error: {exc}", file=sys.stderr)
        return 1
    print(f"switchyard batch: {summary}", flush=True)
    return 0
