"""``python -m benchmarks.loadgen``: load one running gRPC server and print (or write) each point's figures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.loadgen import DEFAULT_TOLERANCE, PROTOCOL_METHODS, LoadGenerator, Target, Windows
from benchmarks.loadgen import __doc__ as _package_doc


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _server(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    if not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def main(argv: Sequence[str] | None = None) -> int:
    description = (_package_doc or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=description)
    parser.add_argument("--address", required=True, help="host:port of the server to load")
    parser.add_argument("--protocol", choices=sorted(PROTOCOL_METHODS), default="oip")
    parser.add_argument("--name", help="label of the target in the report (default: protocol@address)")
    parser.add_argument("--model", default="digits_logreg", help="model name (protocol oip)")
    parser.add_argument("--route", default="digits", help="route name (protocol switchyard)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--concurrency", type=_numbers, help="closed loop at these concurrencies, e.g. 1,8,32")
    parser.add_argument("--rate", type=_numbers, help="open loop at these total rates (requests/s), e.g. 200,400")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=Windows.warmup_s, help="seconds of warm-up per point")
    parser.add_argument("--window", type=float, default=Windows.window_s, help="seconds per measurement window")
    parser.add_argument("--max-windows", type=int, default=Windows.max_windows)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--server", type=_server, action="append", default=[], help="NAME=PID whose CPU to charge")
    parser.add_argument("--no-check", action="store_true", help="do not check the probe's answer (echo servers)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not args.concurrency and not args.rate:
        parser.error("give --concurrency, --rate or both")

    target = Target(
        name=args.name or f"{args.protocol}@{args.address}",
        address=args.address,
        protocol=args.protocol,
        model=args.model,
        route=args.route,
        batch=args.batch,
        check=not args.no_check,
    )
    settings = Windows(
        warmup_s=args.warmup, window_s=args.window, max_windows=args.max_windows, tolerance=args.tolerance
    )
    results = []
    with LoadGenerator(workers=args.workers, servers=dict(args.server), log=_stderr) as generator:
        generator.probe(target)
        for value in args.concurrency or []:
            results.append(generator.closed_loop(target, int(value), settings))
        for value in args.rate or []:
            results.append(generator.open_loop(target, value, settings))
    for result in results:
        load_text = f"c={result['concurrency']:g}" if result["mode"] == "closed" else f"rate={result['rate_rps']:g}"
        latency = result["latency_ms"]
        print(
            f"{target.name} {load_text}: {result['throughput_rps']:,.1f} req/s, p50 {latency['p50']} ms, "
            f"p90 {latency['p90']} ms, p99 {latency['p99']} ms, max {latency['max']} ms, errors {result['errors']}, "
            f"server CPU-µs/req {result['cpu_us_per_request']}, loadgen CPU {result['loadgen']['cpu_pct']}%"
            + ("" if result["converged"] else " (did not converge)")
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target": asdict(target), "results": results}, indent=2) + "\n")
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
