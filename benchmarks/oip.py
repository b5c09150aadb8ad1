"""The Open Inference Protocol front against Triton itself: the same ModelInfer load, the same client code.

Usage::

    python -m benchmarks.oip            # c = 1, 8, 32, 128; 3 s warm-up, 5 s windows
    python -m benchmarks.oip --short    # c = 1, 8, 32; 1 s warm-up, 1.5 s windows (about 2 minutes)
    python -m benchmarks.oip --smoke    # seconds per point: checks the pieces, numbers meaningless
    python -m benchmarks.oip --short --rounds 3 --concurrency 32   # each ratio's median and range over 3 rounds
    python -m benchmarks.oip --short --driver h2load               # unary points driven by h2load (C)

The bundled ``digits_logreg`` is built into a temporary folder, a local
Triton serves it, and the gateway runs as its own process
(``switchyard serve --triton-url ...``) with one route named like the model,
``digits_logreg``. The request of every path is then the same
``ModelInferRequest`` byte for byte (one row of 64 FP32 pixels as
``raw_input_contents``, model ``digits_logreg``), built and sent by the same
load generator (``benchmarks.loadgen``, or ``h2load``); only the address differs:

* ``triton``: ``ModelInfer`` on Triton's gRPC port (the baseline);
* ``switchyard_oip``: ``ModelInfer`` on the gateway's port (the OIP front,
  through the gateway's whole request lifecycle, then Triton);
* ``switchyard``: the gateway's own ``Gateway/Infer`` on the same route, for
  the cost of the translation between the two protocols;
* ``triton_stream`` and ``switchyard_oip_stream``: the same requests on one
  ``ModelStreamInfer`` stream per load generator process (not with h2load);
  the gateway's stream is compared with Triton's (measured up to c=32:
  ``benchmarks.run.TRITON_STREAM_MAX_CONCURRENCY``).

Each row gives its throughput against its direct path at the same
concurrency and round (``× direct``: the OIP front's ratio to Triton, with
identical client code), latency, and CPU per request of Triton, the gateway
and the load generator. Writes ``oip-<profile>-<time>.json``, ``.md`` and
``.png`` (with matplotlib) into ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_OUT,
    MODEL,
    PROFILES,
    STARTUP_TIMEOUT_S,
    Profile,
    ServerProcess,
    child_env,
    errors_cell,
    format_value,
    gateway_command,
    load_cell,
    log_stderr,
    render_table,
    report_meta,
    settled,
    spread_of,
    write_report,
)
from benchmarks.h2load import H2Load
from benchmarks.loadgen import LoadGenerator, Target
from benchmarks.run import TRITON_STREAM_MAX_CONCURRENCY

ROUTES_TOML = f"""# Written by benchmarks.oip: one plain route named like its model: both ports take the same request.
[[routes]]
name = "{MODEL}"
model = "{MODEL}"
batching = false
"""
PATHS = ("triton", "switchyard_oip", "switchyard", "triton_stream", "switchyard_oip_stream")
"""In the order they are measured at each concurrency."""
DIRECT = {
    "triton": None,
    "switchyard_oip": "triton",
    "switchyard": "triton",
    "triton_stream": None,
    "switchyard_oip_stream": "triton_stream",
}
"""The path each one is compared with (None: a baseline)."""
SERVER = {"triton": "triton", "triton_stream": "triton"}
"""The server each path calls; the others call the gateway."""


def target(name: str, address: str, batch: int) -> Target:
    """The load of path ``name``: the same OIP request for every OIP path, the gateway request for ``switchyard``."""
    if name == "switchyard":
        return Target(name, address, "switchyard", route=MODEL, batch=batch)
    return Target(name, address, "oip_stream" if name.endswith("_stream") else "oip", model=MODEL, batch=batch)


def compare(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point, with its throughput and latency against its direct path (same concurrency and round)."""
    by_point = {(r["target"], r["concurrency"], r.get("round", 1)): r for r in results}
    rows = []
    for result in results:
        direct = DIRECT[result["target"]]
        base = by_point.get((direct or "", result["concurrency"], result.get("round", 1)))
        cpu = result["cpu_us_per_request"]
        row: dict[str, Any] = {
            "mode": "closed",
            "load": result["concurrency"],
            "round": result.get("round", 1),
            "target": result["target"],
            "throughput_rps": result["throughput_rps"],
            "latency_ms": result["latency_ms"],
            "triton_cpu_us_per_request": cpu.get("triton"),
            "gateway_cpu_us_per_request": cpu.get("switchyard") if SERVER.get(result["target"]) is None else None,
            "loadgen_cpu_us_per_request": result["loadgen"]["cpu_us_per_request"],
            "other_cpu_pct": result["other_cpu_pct"],
            "errors": result["errors"],
            "converged": result["converged"],
            "throughput_vs_direct": 1.0 if direct is None else None,
            "added_p50_ms": None,
        }
        if base is not None and base["throughput_rps"]:
            row["throughput_vs_direct"] = round(result["throughput_rps"] / base["throughput_rps"], 3)
            row["added_p50_ms"] = round(result["latency_ms"]["p50"] - base["latency_ms"]["p50"], 3)
        rows.append(row)
    return rows


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("load", lambda row: load_cell(row) + (f" (round {row['round']})" if row["round"] > 1 else "")),
    ("path", lambda row: settled(row["target"], row)),
    ("req/s", lambda row: format_value(row["throughput_rps"])),
    ("× direct", lambda row: format_value(row["throughput_vs_direct"], ".2f")),
    ("p50 ms", lambda row: f"{row['latency_ms']['p50']:.2f}"),
    ("p99 ms", lambda row: f"{row['latency_ms']['p99']:.2f}"),
    ("+p50 ms", lambda row: format_value(row["added_p50_ms"], ".2f", signed=True)),
    ("Triton CPU-µs/req", lambda row: format_value(row["triton_cpu_us_per_request"])),
    ("gateway CPU-µs/req", lambda row: format_value(row["gateway_cpu_us_per_request"])),
    ("loadgen CPU-µs/req", lambda row: format_value(row["loadgen_cpu_us_per_request"])),
    ("others' CPU %", lambda row: format_value(row["other_cpu_pct"])),
    ("errors", errors_cell),
)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    return render_table([title for title, _ in COLUMNS], rows, lambda row: [cell(row) for _, cell in COLUMNS])


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per compared path and concurrency, the median and range of ``× direct`` over the rounds."""
    groups: dict[tuple[str, int], list[float | None]] = {}
    for row in rows:
        if DIRECT[row["target"]] is not None:
            groups.setdefault((row["target"], row["load"]), []).append(row["throughput_vs_direct"])
    return [
        {"target": path, "load": load, "vs": DIRECT[path], "throughput_vs_direct": spread_of(values)}
        for (path, load), values in groups.items()
    ]


def ratio_lines(summary: Sequence[dict[str, Any]]) -> str:
    """One printed line per ratio: ``c=32: switchyard_oip / triton = 0.81 (0.79-0.84 over 3 rounds)``."""
    lines = []
    for item in summary:
        spread = item["throughput_vs_direct"]
        if spread is None:
            continue
        text = f"c={item['load']}: {item['target']} / {item['vs']} = {spread['median']:.2f}"
        if spread["min"] != spread["max"]:
            text += f" ({spread['min']:.2f}-{spread['max']:.2f})"
        lines.append(text)
    return "\n".join(lines)


def run(
    profile: Profile,
    *,
    workers: int,
    batch: int,
    rounds: int,
    driver: str,
    out: Path,
    log: Callable[[str], None],
    command: str,
) -> dict[str, Any]:
    """Build the model, start Triton and the gateway, measure every path at every concurrency, write the report."""
    from switchyard.models.build import MODELS, build_repository
    from switchyard.server.local_triton import LocalTriton

    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    started = datetime.datetime.now(datetime.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-oip-bench-"))
    results: list[dict[str, Any]] = []
    paths = [p for p in PATHS if driver == "python" or not p.endswith("_stream")]
    failed = True
    try:
        log(f"building {MODEL} into {work_dir / 'models'}")
        repository = build_repository(work_dir / "models", [spec for spec in MODELS if spec.name == MODEL])
        triton = LocalTriton(repository, work_dir=work_dir / "triton")
        log("starting Triton")
        triton.start_sync()
        gateway: ServerProcess | None = None
        try:
            triton.wait_ready_sync(STARTUP_TIMEOUT_S)
            routes = work_dir / "routes.toml"
            routes.write_text(ROUTES_TOML)
            log("starting the gateway")
            gateway = ServerProcess.start("switchyard", gateway_command(triton.grpc_url, routes), work_dir, child_env())
            assert triton.pid is not None
            addresses = {"triton": triton.grpc_url, "switchyard": gateway.address}
            targets = {name: target(name, addresses[SERVER.get(name, "switchyard")], batch) for name in paths}
            servers = {"triton": triton.pid, "switchyard": gateway.pid}
            generator_class = H2Load if driver == "h2load" else LoadGenerator
            with generator_class(workers=workers, servers=servers, log=log) as generator:
                for one in targets.values():
                    generator.probe(one)
                for round_number in range(1, rounds + 1):
                    for concurrency in profile.concurrency:
                        for name, one in targets.items():
                            if name.endswith("_stream") and concurrency > TRITON_STREAM_MAX_CONCURRENCY:
                                continue  # Triton's own streams crash above it (benchmarks.run); compare like with like
                            of_rounds = f", round {round_number} of {rounds}" if rounds > 1 else ""
                            log(f"{name}: closed loop, concurrency {concurrency}{of_rounds}")
                            result = generator.closed_loop(one, concurrency, profile.windows)
                            results.append({**result, "round": round_number})
        finally:
            if gateway is not None:
                gateway.stop()
            triton.stop_sync()
        failed = False
    finally:
        if failed:
            log(f"the servers' logs are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = compare(results)
    summary = ratios(rows)
    report: dict[str, Any] = {
        "meta": report_meta(
            started,
            profile.name,
            command,
            workers,
            driver=driver,
            batch=batch,
            model=MODEL,
            rounds=rounds,
            windows=asdict(profile.windows),
        ),
        "results": results,
        "comparison": rows,
        "ratios": summary,
    }
    cpus = report["meta"]["machine"]["cpus"]
    title = f"OIP front against Triton on {cpus} CPUs, {profile.name} profile, {started:%Y-%m-%d}"
    table = f"{markdown_table(rows)}\n\nThroughput against the direct path, same client code:\n\n{ratio_lines(summary)}"
    write_report(out, f"oip-{profile.name}", report, title, table, log)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.oip", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="c = 1, 8, 32, short windows")
    size.add_argument("--smoke", action="store_true", help="a few seconds per point: checks the pieces, not speed")
    parser.add_argument("--concurrency", help="comma-separated closed-loop concurrencies (default: the profile's)")
    parser.add_argument("--rounds", type=int, default=1, help="measure every point this many times, round after round")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument(
        "--driver",
        choices=("python", "h2load"),
        default="python",
        help="load generator: Python processes (default) or h2load (C; unary paths only)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    profile = PROFILES["short" if args.short else "smoke" if args.smoke else "full"]
    if args.concurrency:
        profile = replace(profile, concurrency=tuple(int(v) for v in args.concurrency.split(",")))
    command = " ".join(["python -m benchmarks.oip", *(sys.argv[1:] if argv is None else argv)])
    run(
        profile,
        workers=args.workers,
        batch=args.batch,
        rounds=args.rounds,
        driver=args.driver,
        out=args.out,
        log=log_stderr,
        command=command,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
