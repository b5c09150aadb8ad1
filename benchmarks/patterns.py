"""Routing patterns and the streaming RPC, each against its alternative, side by side in one run.

Usage::

    python -m benchmarks.patterns            # 3 s warm-up, 5 s windows
    python -m benchmarks.patterns --short    # 1 s warm-up, 1.5 s windows (about 2 minutes)
    python -m benchmarks.patterns --smoke    # seconds per point, lower concurrency: checks the pieces only
    python -m benchmarks.patterns --short --only workers    # one comparison
    python -m benchmarks.patterns --short --highest-load    # each comparison at its highest load only
    python -m benchmarks.patterns --short --only default_batching --rounds 3   # default vs batching = false

One local Triton (``LocalTriton``) serves ``digits_logreg``, ``wine_classifier``
and ``wine_alcohol_regressor`` (built as ``benchmarks.run`` builds its
models), and one gateway process (``switchyard serve``, as ``benchmarks.run``
starts it; a second with ``--workers 2`` for the ``workers`` comparison)
serves the routes of ``ROUTES_TOML``. With the load generator of
``benchmarks.loadgen`` (same windows method), six comparisons, each
group measured back to back:

* ``fanout``, c = 1 and 8: ``wine_profile`` (parallel: both wine models at
  once) against the same two calls one after another, made by the client
  (``wine`` then ``wine_alcohol``, one unary call each, the latency being the
  pair's) and made by the gateway (``wine_serial``, a serial route with the
  same two models).
* ``cache``, c = 1 and 8: ``digits_cached`` hit every time (the same input)
  and missed every time (``bypass_cache = true``: recomputed, coalescing
  skipped), against the uncached ``digits``.
* ``hotkey``, c = 32, every caller sending the same input: no cache and no
  coalescing (``digits``), coalescing alone (``digits_coalesced``), and a
  cache with a 1 ms TTL without and with coalescing (``digits_ttl1ms``,
  ``digits_ttl1ms_coalesced``). A cache with a usual TTL answers a hot key
  from memory after its first call and leaves nothing for coalescing to do;
  a TTL shorter than a call keeps the key almost always expired, so what
  separates the pairs is whether concurrent identical requests share one
  Triton call.
* ``stream``, c = 32: ``digits`` over unary ``Gateway/Infer`` and over
  ``Gateway/InferStream`` (each load generator worker keeps one stream, with
  its share of the callers' requests in flight on it).
* ``workers``, c = 8 and 32: ``digits`` and the micro-batched
  ``digits_batched`` through a second gateway started with ``--workers 2``
  (two processes on one port, SO_REUSEPORT) against the first, one process.
  Each load generator process opens 4 connections (both gateways alike) and
  the kernel spreads connections over the workers.
* ``batching``, c = 32, then open loop at fixed rates (``RATES``: 400 and
  800 requests/s in the short profile): ``digits`` against the micro-batched
  ``digits_batched`` (eager: a request goes at once when no merged call is in
  flight) and ``digits_batched_eager2`` (``eager_calls = 2``: at once while
  fewer than two are). In open loop the latency is measured from each
  request's scheduled send time, so a batching delay shows in full.
* ``default_batching``, c = 1, 2, 4, 8 and 32, two rounds (ABAB): the
  default route ``digits_default`` (no ``batching`` key: micro-batching on,
  adapted to the model) against ``digits`` (``batching = false``). Besides
  the table it prints, per concurrency, the medians over the rounds of the
  default's p50 and throughput over the plain route's, against the targets:
  p50 within 5% at c <= 4, more throughput at c >= 8.

Every route but ``digits_default`` says how it batches (single-model routes
micro-batch by default when their model batches): the plain ones say
``batching = false``.

Besides throughput, latency and CPU per request (gateway and Triton), every
row gives Triton's own count of requests and of model executions per 1000
requests of the load (its inference statistics, read at each window
boundary): a Triton execution may hold several requests (dynamic batching).
Writes ``patterns-<profile>-<time>.json``, ``.md`` and ``.png`` (with matplotlib) into
``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_OUT,
    PROFILES,
    STARTUP_TIMEOUT_S,
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
from benchmarks.loadgen import LoadGenerator, Target, Windows

MODELS = ("digits_logreg", "wine_classifier", "wine_alcohol_regressor")
ROUTES_TOML = """# Written by benchmarks.patterns: the routes it compares (names as in the bundled routes).
# Single-model routes micro-batch by default when the model batches; all but digits_default say how.
[[routes]]
name = "digits_default"
model = "digits_logreg"

[[routes]]
name = "digits"
model = "digits_logreg"
batching = false

[[routes]]
name = "digits_batched"
model = "digits_logreg"
batching = { max_delay_ms = 2.0, max_batch = 64, eager = true }

[[routes]]
name = "digits_batched_eager2"
model = "digits_logreg"
batching = { max_delay_ms = 2.0, max_batch = 64, eager = true, eager_calls = 2 }

[[routes]]
name = "digits_cached"
model = "digits_logreg"
batching = false
coalesce = true
cache = { ttl_s = 300 }

[[routes]]
name = "digits_coalesced"
model = "digits_logreg"
batching = false
coalesce = true

[[routes]]
name = "digits_ttl1ms"
model = "digits_logreg"
batching = false
cache = { ttl_s = 0.001 }

[[routes]]
name = "digits_ttl1ms_coalesced"
model = "digits_logreg"
batching = false
coalesce = true
cache = { ttl_s = 0.001 }

[[routes]]
name = "wine"
model = "wine_classifier"
batching = false

[[routes]]
name = "wine_alcohol"
model = "wine_alcohol_regressor"
batching = false
[[routes.post]]
op = "clip"
tensor = "alcohol"
min = 0.0

[[routes]]
name = "wine_profile"
kind = "parallel"
policy = "partial"
[[routes.branches]]
name = "cultivar"
model = "wine_classifier"
timeout_s = 2.0
[[routes.branches]]
name = "alcohol"
model = "wine_alcohol_regressor"
timeout_s = 2.0

[[routes]]
name = "wine_serial"
kind = "serial"
[[routes.steps]]
name = "cultivar"
model = "wine_classifier"
timeout_s = 2.0
[[routes.steps]]
name = "alcohol"
model = "wine_alcohol_regressor"
timeout_s = 2.0
"""


@dataclass(frozen=True)
class Case:
    """One row of a comparison: a name and what the load generator sends."""

    name: str
    route: str
    protocol: str = "switchyard"
    then: tuple[str, ...] = ()
    bypass_cache: bool = False
    wine: bool = False
    gateway_workers: int = 1
    """Worker processes of the gateway that serves this path (``serve --workers``)."""

    @property
    def gateway(self) -> str:
        return gateway_name(self.gateway_workers)


def gateway_name(workers: int) -> str:
    """The name of the gateway with ``workers`` processes among the servers whose CPU is measured."""
    return "switchyard" if workers == 1 else f"switchyard_x{workers}"


@dataclass(frozen=True)
class Comparison:
    name: str
    what: str
    paths: tuple[Case, ...]
    """The first is the baseline the others' throughput is compared with."""
    loads: tuple[str, ...]
    """Concurrency levels by role (``low``, ``mid``, ``high``), mapped per profile by ``CONCURRENCY``."""
    connections: int = 1
    """Connections each load generator process opens to the gateway (calls take them in turn)."""
    open_loop: bool = False
    """Also measured in open loop, at the profile's ``RATES`` (after the closed-loop loads)."""
    levels: tuple[int, ...] = ()
    """Closed-loop concurrencies in every profile but smoke, instead of those of ``loads``."""
    rounds: int = 1
    """How many times each closed-loop load is measured, every path in each round (ABAB)."""


COMPARISONS = (
    Comparison(
        "fanout",
        "parallel fan-out vs the same two calls one after another",
        (
            Case("client_sequence", "wine", then=("wine_alcohol",), wine=True),
            Case("serial_route", "wine_serial", wine=True),
            Case("parallel_route", "wine_profile", wine=True),
        ),
        ("low", "mid"),
    ),
    Comparison(
        "cache",
        "prediction cache hit vs miss",
        (
            Case("no_cache", "digits"),
            Case("cache_miss", "digits_cached", bypass_cache=True),
            Case("cache_hit", "digits_cached"),
        ),
        ("low", "mid"),
    ),
    Comparison(
        "hotkey",
        "one hot key with and without coalescing",
        (
            Case("plain", "digits"),
            Case("coalesce", "digits_coalesced"),
            Case("ttl1ms", "digits_ttl1ms"),
            Case("ttl1ms_coalesce", "digits_ttl1ms_coalesced"),
        ),
        ("high",),
    ),
    Comparison(
        "stream",
        "unary vs streaming on the passthrough route",
        (Case("unary", "digits"), Case("stream", "digits", protocol="switchyard_stream")),
        ("high",),
    ),
    Comparison(
        "workers",
        "gateway worker processes 1 vs 2 on one port",
        (
            Case("one_worker", "digits"),
            Case("two_workers", "digits", gateway_workers=2),
            Case("one_worker_batched", "digits_batched"),
            Case("two_workers_batched", "digits_batched", gateway_workers=2),
        ),
        ("mid", "high"),
        connections=4,
    ),
    Comparison(
        "batching",
        "micro-batching: eager (send when no merged call is in flight) vs eager_calls = 2, open loop too",
        (
            Case("plain", "digits"),
            Case("batched", "digits_batched"),
            Case("batched_eager2", "digits_batched_eager2"),
        ),
        ("high",),
        open_loop=True,
    ),
    Comparison(
        "default_batching",
        "micro-batching on by default (adaptive) vs batching = false, c = 1 to 32",
        (Case("batching_off", "digits"), Case("default", "digits_default")),
        ("high",),
        levels=(1, 2, 4, 8, 32),
        rounds=2,
    ),
)
DEFAULT_BATCHING_TARGETS = {"p50_within": 0.05, "p50_up_to_c": 4, "throughput_above_from_c": 8}
"""What the default route must show against ``batching = false``: p50 at most 5% higher at c <= 4, and more
throughput at c >= 8."""
SMOKE_WINDOWS = Windows(warmup_s=0.2, window_s=0.3, max_windows=3)
"""Smoke: shorter than ``benchmarks.run``'s smoke windows, and one load per comparison (its last)."""
RATES = {"full": (200.0, 400.0, 800.0, 1200.0), "short": (400.0, 800.0), "smoke": (50.0,)}
"""Open-loop rates (requests/s) of the comparisons that have ``open_loop``, by profile."""
CONCURRENCY = {
    "full": {"low": 1, "mid": 8, "high": 32},
    "short": {"low": 1, "mid": 8, "high": 32},
    "smoke": {"low": 1, "mid": 2, "high": 4},
}


def closed_levels(
    comparison: Comparison, concurrency: dict[str, int], profile_name: str, highest_load: bool
) -> list[int]:
    """The closed-loop concurrencies ``comparison`` is measured at in this profile (its highest only, if asked)."""
    if comparison.levels and profile_name != "smoke":
        levels = list(comparison.levels)
    else:
        levels = [concurrency[load] for load in comparison.loads]
    return levels[-1:] if highest_load else levels


def target(comparison: Comparison, path: Case, address: str) -> Target:
    """What the load generator sends for ``path``: one row (wine: 12 features, every output; digits: 64 pixels)."""
    sent = Target(
        f"{comparison.name}.{path.name}",
        address,
        path.protocol,
        route=path.route,
        then=path.then,
        bypass_cache=path.bypass_cache,
        connections=comparison.connections,
    )
    return replace(sent, input_name="features", features=12, outputs=()) if path.wine else sent


def triton_counters(url: str) -> tuple[Callable[[], dict[str, float]], Callable[[], None]]:
    """A reader of Triton's running totals over every model (requests and model executions), and its closer."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def read() -> dict[str, float]:
        stats = client.get_inference_statistics().model_stats  # one read: both totals from the same moment
        return {
            "triton_requests": float(sum(model.inference_stats.success.count for model in stats)),
            "triton_executions": float(sum(model.execution_count for model in stats)),
        }

    return read, client.close


def compare(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point, with its throughput and p50 against the first path of its comparison at the same load.

    The first path is taken from the same round (comparisons with ``rounds`` measure every load several times).
    """
    first: dict[tuple[str, str, float, int], dict[str, Any]] = {}
    cases = {(c.name, p.name): p for c in COMPARISONS for p in c.paths}
    rows = []
    for result in results:
        group, path = result["target"].split(".", 1)
        case = cases.get((group, path), Case(path, ""))
        mode = result["mode"]
        load = float(result["concurrency"] if mode == "closed" else result["rate_rps"])
        key = (group, mode, load, result.get("round", 1))
        first.setdefault(key, result)
        base = first[key]["throughput_rps"]
        base_p50 = first[key]["latency_ms"]["p50"]
        counters = result.get("counters_per_request", {})
        per_1000 = {name: None if value is None else round(value * 1000, 1) for name, value in counters.items()}
        rows.append(
            {
                "comparison": group,
                "path": path,
                "mode": mode,
                "load": load,
                "throughput_rps": result["throughput_rps"],
                "round": result.get("round", 1),
                "vs_first": round(result["throughput_rps"] / base, 3) if base else None,
                "p50_vs_first": round(result["latency_ms"]["p50"] / base_p50, 3) if base_p50 else None,
                "latency_ms": result["latency_ms"],
                "triton_requests_per_1000": per_1000.get("triton_requests"),
                "triton_executions_per_1000": per_1000.get("triton_executions"),
                "gateway_cpu_us_per_request": result["cpu_us_per_request"].get(case.gateway),
                "triton_cpu_us_per_request": result["cpu_us_per_request"].get("triton"),
                "loadgen_cpu_us_per_request": result["loadgen"]["cpu_us_per_request"],
                "other_cpu_pct": result["other_cpu_pct"],
                "errors": result["errors"],
                "converged": result["converged"],
            }
        )
    return rows


def default_batching_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency, the default route's p50 and throughput over ``batching = false``'s, and the target met.

    Medians and ranges over the rounds, each ratio taken within one round. Empty without that comparison.
    """
    by_load: dict[float, list[dict[str, Any]]] = {}
    plain: dict[tuple[float, int], dict[str, Any]] = {}
    for row in rows:
        if row["comparison"] != "default_batching" or row["mode"] != "closed":
            continue
        if row["path"] == "default":
            by_load.setdefault(row["load"], []).append(row)
        else:
            plain[row["load"], row["round"]] = row
    targets = DEFAULT_BATCHING_TARGETS
    summary = []
    for load, members in sorted(by_load.items()):
        p50 = spread_of([m["p50_vs_first"] for m in members])
        throughput = spread_of([m["vs_first"] for m in members])
        if load <= targets["p50_up_to_c"]:
            goal = f"p50 × ≤ {1 + targets['p50_within']:.2f}"
            met = p50 is not None and p50["median"] <= 1 + targets["p50_within"]
        elif load >= targets["throughput_above_from_c"]:
            goal = "req/s × > 1"
            met = throughput is not None and throughput["median"] > 1.0
        else:
            goal, met = "–", True
        off = [plain[load, m["round"]] for m in members if (load, m["round"]) in plain]
        summary.append(
            {
                "load": load,
                "rounds": len(members),
                "p50_ms_off": spread_of([o["latency_ms"]["p50"] for o in off]),
                "p50_ms_default": spread_of([m["latency_ms"]["p50"] for m in members]),
                "p50_ratio": p50,
                "throughput_rps_off": spread_of([o["throughput_rps"] for o in off]),
                "throughput_rps_default": spread_of([m["throughput_rps"] for m in members]),
                "throughput_ratio": throughput,
                "target": goal,
                "met": met,
                "converged": all(m["converged"] for m in [*members, *off]),
            }
        )
    return summary


def _median_range(spread: dict[str, float] | None, spec: str) -> str:
    if spread is None:
        return "–"
    text = format(spread["median"], spec)
    if spread["min"] != spread["max"]:
        text += f" ({format(spread['min'], spec)}–{format(spread['max'], spec)})"
    return text


def default_batching_table(summary: Sequence[dict[str, Any]]) -> str:
    """``default_batching_summary`` side by side: p50 and throughput of both routes, their ratios, the targets."""
    header = ("c", "rounds", "p50 ms off", "p50 ms default", "p50 ×", "req/s off", "req/s default", "req/s ×", "target")
    return render_table(
        header,
        summary,
        lambda row: [
            f"{row['load']:g}",
            str(row["rounds"]),
            _median_range(row["p50_ms_off"], ".2f"),
            _median_range(row["p50_ms_default"], ".2f"),
            _median_range(row["p50_ratio"], ".2f"),
            _median_range(row["throughput_rps_off"], ",.0f"),
            _median_range(row["throughput_rps_default"], ",.0f"),
            _median_range(row["throughput_ratio"], ".2f"),
            row["target"] + ("" if row["target"] == "–" else " met" if row["met"] else " missed"),
        ],
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "comparison",
        "load",
        "path",
        "req/s",
        "× first",
        "p50 × first",
        "p50 ms",
        "p99 ms",
        "Triton req/1000",
        "Triton exec/1000",
        "gateway CPU-µs/req",
        "Triton CPU-µs/req",
        "loadgen CPU-µs/req",
        "others' CPU %",
        "errors",
    )
    return render_table(
        header,
        rows,
        lambda row: [
            row["comparison"],
            load_cell(row) + (f" (round {row['round']})" if row["round"] > 1 else ""),
            settled(row["path"], row),
            format_value(row["throughput_rps"]),
            format_value(row["vs_first"], ".2f"),
            format_value(row["p50_vs_first"], ".2f"),
            f"{row['latency_ms']['p50']:.2f}",
            f"{row['latency_ms']['p99']:.2f}",
            format_value(row["triton_requests_per_1000"]),
            format_value(row["triton_executions_per_1000"]),
            format_value(row["gateway_cpu_us_per_request"]),
            format_value(row["triton_cpu_us_per_request"]),
            format_value(row["loadgen_cpu_us_per_request"]),
            format_value(row["other_cpu_pct"]),
            errors_cell(row),
        ],
    )


def run(
    profile_name: str,
    windows: Windows,
    *,
    workers: int,
    out: Path,
    log: Callable[[str], None],
    command: str | None = None,
    only: Sequence[str] = (),
    highest_load: bool = False,
    rounds: int = 0,
) -> dict[str, Any]:
    """Start Triton and the gateways, measure the comparisons (those named in ``only``, or all), write the report.

    With ``highest_load`` (always in the smoke profile) each comparison runs at its highest load only.
    ``rounds`` (when not 0) replaces every comparison's own number of rounds (always 1 in the smoke profile).
    """
    from switchyard.models.build import MODELS as BUNDLED
    from switchyard.models.build import build_repository
    from switchyard.server.local_triton import LocalTriton

    started = datetime.datetime.now(datetime.UTC)
    concurrency = CONCURRENCY[profile_name]
    highest_load = highest_load or profile_name == "smoke"
    comparisons = [c for c in COMPARISONS if not only or c.name in only]
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-patterns-"))
    results: list[dict[str, Any]] = []
    failed = True
    try:
        log(f"building {', '.join(MODELS)} into {work_dir / 'models'}")
        repository = build_repository(work_dir / "models", [spec for spec in BUNDLED if spec.name in MODELS])
        triton = LocalTriton(repository, work_dir=work_dir / "triton")
        log("starting Triton")
        triton.start_sync()
        try:
            triton.wait_ready_sync(STARTUP_TIMEOUT_S)
            routes = work_dir / "routes.toml"
            routes.write_text(ROUTES_TOML)
            gateways: dict[int, ServerProcess] = {}
            for count in sorted({path.gateway_workers for c in comparisons for path in c.paths}):
                log(f"starting switchyard with {count} worker process(es)")
                gateway_argv = [*gateway_command(triton.grpc_url, routes), "--workers", str(count)]
                name = gateway_name(count)
                gateways[count] = ServerProcess.start(name, gateway_argv, work_dir, child_env())
            counters, close_counters = triton_counters(triton.grpc_url)
            try:
                servers = {"triton": triton.pid or 0}
                servers.update({gateway_name(n): g.pid for n, g in gateways.items()})
                with LoadGenerator(workers=workers, servers=servers, log=log, counters=counters) as generator:
                    for comparison in comparisons:
                        targets = [
                            target(comparison, path, gateways[path.gateway_workers].address)
                            for path in comparison.paths
                        ]
                        for one in targets:
                            generator.probe(one)
                        levels = closed_levels(comparison, concurrency, profile_name, highest_load)
                        measured_rounds = 1 if profile_name == "smoke" else rounds or comparison.rounds
                        for level in levels:
                            for round_number in range(1, measured_rounds + 1):
                                for one in targets:
                                    log(f"{one.name}: closed loop, concurrency {level}, round {round_number}")
                                    result = generator.closed_loop(one, level, windows)
                                    result["round"] = round_number
                                    results.append(result)
                        for rate in RATES[profile_name] if comparison.open_loop else ():
                            for one in targets:
                                log(f"{one.name}: open loop, {rate:g} requests/s")
                                results.append(generator.open_loop(one, rate, windows))
            finally:
                close_counters()
                for gateway in gateways.values():
                    gateway.stop()
        finally:
            triton.stop_sync()
        failed = False
    finally:
        if failed:
            log(f"logs of the servers are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = compare(results)
    short = profile_name != "full"
    meta = report_meta(
        started,
        profile_name,
        command or " ".join(["python -m benchmarks.patterns", *([f"--{profile_name}"] * short)]),
        workers,
        models=list(MODELS),
        routes_toml=ROUTES_TOML,
        comparisons={c.name: {"what": c.what, "paths": [asdict(p) for p in c.paths]} for c in comparisons},
        concurrency=concurrency,
        rates=RATES[profile_name],
        highest_load_only=highest_load,
        rounds=rounds,
        levels={c.name: closed_levels(c, concurrency, profile_name, highest_load) for c in comparisons},
        windows=asdict(windows),
    )
    report: dict[str, Any] = {"meta": meta, "results": results, "comparison": rows}
    table = markdown_table(rows)
    summary = default_batching_summary(rows)
    if summary:
        report["default_batching"] = summary
        table += "\n\nDefault route (micro-batching on) against batching = false, medians over rounds:\n\n"
        table += default_batching_table(summary)
    cpus = meta["machine"]["cpus"]
    title = f"routing patterns and streaming, {cpus} CPUs, {profile_name} profile, {started:%Y-%m-%d}"
    write_report(out, f"patterns-{profile_name}", report, title, table, log)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patterns", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="1 s warm-up, 1.5 s windows (about 2 minutes)")
    size.add_argument("--smoke", action="store_true", help="a few seconds per point: checks the pieces, not speed")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[c.name for c in COMPARISONS],
        default=[],
        help="measure this comparison only (repeatable; default: all)",
    )
    parser.add_argument(
        "--highest-load", action="store_true", help="each comparison at its highest load only (c = 8 or 32)"
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="measure every closed-loop load this many times (default: per comparison)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    name = "short" if args.short else "smoke" if args.smoke else "full"
    command = " ".join(["python -m benchmarks.patterns", *(sys.argv[1:] if argv is None else argv)])
    windows = SMOKE_WINDOWS if name == "smoke" else PROFILES[name].windows
    run(
        name,
        windows,
        workers=args.workers,
        out=args.out,
        log=log_stderr,
        command=command,
        only=args.only,
        highest_load=args.highest_load,
        rounds=args.rounds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
