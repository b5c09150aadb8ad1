"""Side by side: Triton called directly, through the floor proxy, and through Switchyard.

Usage::

    python -m benchmarks.run            # full: 3 s warm-up, 5 s windows, c = 1, 8, 32, 128, then open loop
    python -m benchmarks.run --short    # about 3 minutes: 1 s warm-up, 1.5 s windows, c = 1, 8, 32
    python -m benchmarks.run --smoke    # seconds per point; checks that every piece runs, numbers meaningless
    python -m benchmarks.run --short --concurrency 32 --rounds 3   # every point three times, round after round

One command starts everything it measures, on loopback, in this order: the
bundled ``digits_logreg`` and ``image_cnn`` models built into a temporary
folder, a local Triton serving them (``LocalTriton``), the Switchyard gateway
as its own process (``python -m switchyard.server.cli serve --triton-url ...
--port 0 --no-metrics``, with a routes file holding the ``digits`` route, its
micro-batched twin ``digits_batched`` and the ``cnn`` route; the plain
routes say ``batching = false``, since micro-batching is on by default), the
floor proxy (``benchmarks/floor_proxy.py``) in front of the same Triton, and
an echo server (the floor proxy with ``--echo``) that measures the load
generator's own ceiling. Then, with the load generator of ``benchmarks.loadgen``, at
each concurrency in turn it measures the three paths to the same model with
the same request (one row of 64 FP32 pixels): ``triton`` (ModelInfer on
Triton's port), ``floor`` (the same bytes through the floor), ``switchyard``
(``Gateway/Infer`` on route ``digits``), ``switchyard_batched`` (the same
gateway, route ``digits_batched``: gateway-side micro-batching, 2 ms) and
``switchyard_batched_stream`` (that route over ``Gateway/InferStream``, one
stream per load generator process), and over streams as well ``triton_stream``
(Triton's own ``ModelStreamInfer``) and ``switchyard_stream`` (route ``digits``
over ``InferStream``); every stream path is compared with ``triton_stream``
(not with ``--driver h2load``, which has no streams).
Then the compute-heavy CNN (one FP32 [3, 224, 224] image per request) the same
three ways, ``cnn_triton``, ``cnn_floor`` and ``cnn_switchyard`` (route
``cnn``), plus ``cnn_switchyard_shm``: a second gateway process, the same but
for ``--triton-shared-memory system`` (the image reaches Triton through
shared memory), and ``cnn_switchyard_shm_stream`` (that gateway over
``InferStream``, one stream per load generator process; not with h2load),
closed loop at ``cnn_concurrency`` (32; 8 and 32 in full), each compared
with ``cnn_triton`` (the direct-Triton baseline, unary calls).

Each row also gives its throughput against the unparsed floor of the same
model, load and round (``× floor``: ``floor`` on digits, ``cnn_floor`` on the
CNN), and its hop's own CPU per request against the floor's (``proxy CPU ×
floor``). The converter (``floor_proxy --convert``) sits between the two on
digits: what the contract's messages alone cost over the floor.
``--rounds N`` measures every closed-loop point N times, all paths in
each round before the next (ABAB, so a slow spell of this shared machine falls
on every path of a round alike), and adds a table of each ratio's median and
range over the rounds: one run's ratio moves by ±0.06 here, and the range
shows it.

It prints a Markdown table and writes ``run-<profile>-<time>.json`` (every
window of every point), ``.md`` (the table) and ``.png`` (latency against
throughput; needs matplotlib) into ``benchmarks/results/`` (or ``--out``).
Everything it started is stopped on the way out, also on errors. A server
that exits mid-run (Triton, the gateway, the floor) stops the run at the
window that notices (``loadgen.ServerGone``): the report then holds the points
measured before, says why it stopped, the servers' logs are kept, and the
command exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CNN_MODEL,
    CNN_SHAPE,
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
    machine,
    package_versions,
    plot_latency,
    render_table,
    settled,
    spread_of,
)
from benchmarks.h2load import H2Load
from benchmarks.loadgen import (
    LoadGenerator,
    ServerGone,
    Target,
    Windows,
    cpu_seconds,
    process_tree,
)
from benchmarks.peers.pipeline import routes_toml

ROUTE = "digits"
BATCHED_ROUTE = "digits_batched"
CNN_ROUTE = "cnn"
ROUTES_TOML = f"""# Written by benchmarks.run: the routes it measures (digits plain and micro-batched; the CNN, plain).
# Single-model routes micro-batch by default when the model batches: the plain ones say batching = false.
[[routes]]
name = "{ROUTE}"
model = "{MODEL}"
batching = false

[[routes]]
name = "{BATCHED_ROUTE}"
model = "{MODEL}"
batching = {{ max_delay_ms = 2.0, max_batch = 64, eager = true }}

[[routes]]
name = "{CNN_ROUTE}"
model = "{CNN_MODEL}"
batching = false
"""
PATHS = ("triton", "floor", "switchyard")
"""The three ways to the model, in the order they are measured at each concurrency (closed and open loop)."""
CLOSED_ONLY = ("converter", "switchyard_batched", "triton_stream", "switchyard_stream", "switchyard_batched_stream")
"""Measured after PATHS at each closed-loop concurrency: the converter (``floor_proxy --convert``: the contract's
messages in and out, nothing else) and the gateway's micro-batched route; then over one
bidirectional stream per load generator process (not with h2load, which has no streams): Triton's
``ModelStreamInfer``, and the gateway's ``InferStream`` on the plain and the micro-batched route."""
OPEN_PATHS = (*PATHS, "switchyard_batched")
"""Measured in open loop (fixed rates): the three ways, and the micro-batched route (its delay shows at low rates)."""
STREAMED = ("triton_stream", "switchyard_stream", "switchyard_batched_stream")
"""The paths over a stream; each is compared with ``triton_stream``."""
TRITON_STREAM_MAX_CONCURRENCY = 32
"""``triton_stream`` is measured up to this concurrency only: the bundled Triton (2.51) segfaulted in
``TRITONSERVER_InferenceRequestDelete`` with 128 requests in flight on its ``ModelStreamInfer`` streams (twice
at c=128 over two streams, and once with 128 on one stream), which ends the run. Above it the stream rows
have no direct baseline (their "× direct" is empty). The gateway never calls ``ModelStreamInfer``."""
CNN_PATHS = ("cnn_triton", "cnn_floor", "cnn_switchyard", "cnn_switchyard_shm", "cnn_switchyard_shm_stream")
"""The same three ways to the compute-heavy CNN, the gateway with shared memory to Triton, and that gateway
over ``InferStream`` (closed loop only, at the profile's ``cnn_concurrency``; all against ``cnn_triton``)."""

PROXY_OF = {
    "triton": None,
    "floor": "floor",
    "converter": "converter",
    "switchyard": "switchyard",
    "switchyard_batched": "switchyard",
    "switchyard_batched_stream": "switchyard",
    "triton_stream": None,
    "switchyard_stream": "switchyard",
    "echo": "echo",
    "cnn_triton": None,
    "cnn_floor": "floor",
    "cnn_switchyard": "switchyard",
    "cnn_switchyard_shm": "switchyard_shm",
    "cnn_switchyard_shm_stream": "switchyard_shm",
}
"""Which server process (besides Triton) each path goes through."""


def direct_of(target: str) -> str:
    """The direct-Triton path that ``target`` is compared with (same model; a stream with Triton's stream)."""
    if target.startswith("cnn_"):
        return "cnn_triton"
    return "triton_stream" if target in STREAMED else "triton"


# -- processes ---------------------------------------------------------------------


@contextlib.contextmanager
def stack(work_dir: Path, log: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """Triton, the gateway, the floor and the echo server, started in order and stopped in reverse."""
    from switchyard.models.build import MODELS, build_repository
    from switchyard.server.local_triton import LocalTriton

    log(f"building {MODEL} and {CNN_MODEL} into {work_dir / 'models'}")
    repository = build_repository(work_dir / "models", [spec for spec in MODELS if spec.name in (MODEL, CNN_MODEL)])
    triton = LocalTriton(repository, work_dir=work_dir / "triton")
    servers: list[ServerProcess] = []
    try:
        log("starting Triton")
        triton.start_sync()
        triton.wait_ready_sync(STARTUP_TIMEOUT_S)
        routes = work_dir / "routes.toml"
        # The image pipeline's routes too (benchmarks.peers measures them; here for benchmarks.profile).
        routes.write_text(ROUTES_TOML + "\n" + routes_toml())
        python, env = sys.executable, child_env()
        gateway = gateway_command(triton.grpc_url, routes)
        commands = {
            "switchyard": gateway,
            # The same gateway, sending large inputs through shared memory (Triton is on this host).
            "switchyard_shm": [*gateway, "--triton-shared-memory", "system"],
            "floor": [python, "-m", "benchmarks.floor_proxy", "--upstream", triton.grpc_url],
            "converter": [
                *(python, "-m", "benchmarks.floor_proxy", "--upstream", triton.grpc_url),
                *("--convert", f"{ROUTE}={MODEL}"),
            ],
            "echo": [python, "-m", "benchmarks.floor_proxy", "--echo"],
        }
        for name, command in commands.items():
            log(f"starting {name}")
            servers.append(ServerProcess.start(name, command, work_dir, env))
        yield {"triton": triton, **{server.name: server for server in servers}}
    finally:
        for server in reversed(servers):
            server.stop()
        triton.stop_sync()


# -- the comparison ----------------------------------------------------------------


def floor_of(target: str) -> str | None:
    """The unparsed-hop floor a gateway path is held against (``floor`` on digits, ``cnn_floor`` on the CNN)."""
    if target in ("triton", "floor", "triton_stream", "echo", "cnn_triton", "cnn_floor"):
        return None
    return "cnn_floor" if target.startswith("cnn_") else "floor"


def _load_of(result: dict[str, Any]) -> float:
    return float(result["concurrency"] if result["mode"] == "closed" else result["rate_rps"])


def _cpu_cost(result: dict[str, Any], proxy: str | None) -> float | None:
    """CPU-µs per request over everything a request touches: Triton, the proxy (if any), the load generator."""
    per_request = result["cpu_us_per_request"]
    parts = [per_request.get("triton"), result["loadgen"]["cpu_us_per_request"]]
    if proxy is not None:
        parts.append(per_request.get(proxy))
    return None if any(part is None for part in parts) else float(sum(parts))


def compare(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point, with ratios and differences against its direct path (``direct_of``), same mode, load
    and round (``--rounds``)."""
    baselines = {
        (r["target"], r["mode"], _load_of(r), r.get("round", 1)): r
        for r in results
        if r["target"] in ("triton", "triton_stream", "cnn_triton", "floor", "cnn_floor")
    }
    rows = []
    for result in results:
        point = (result["mode"], _load_of(result), result.get("round", 1))
        base = baselines.get((direct_of(result["target"]), *point))
        floor = baselines.get((floor_of(result["target"]) or "", *point))
        proxy = PROXY_OF.get(result["target"])
        latency = result["latency_ms"]
        row: dict[str, Any] = {
            "mode": result["mode"],
            "load": _load_of(result),
            "round": result.get("round", 1),
            "target": result["target"],
            "throughput_rps": result["throughput_rps"],
            "latency_ms": latency,
            "triton_cpu_us_per_request": result["cpu_us_per_request"].get("triton"),
            "proxy_cpu_us_per_request": result["cpu_us_per_request"].get(proxy) if proxy else None,
            "loadgen_cpu_us_per_request": result["loadgen"]["cpu_us_per_request"],
            "loadgen_cpu_pct": result["loadgen"]["cpu_pct"],
            "machine_busy_pct": result["machine_busy_pct"],
            "other_cpu_pct": result["other_cpu_pct"],
            "errors": result["errors"],
            "windows": result["windows_measured"],
            "converged": result["converged"],
            "throughput_vs_direct": None,
            "throughput_vs_floor": None,
            "proxy_cpu_vs_floor": None,
            "cpu_cost_vs_direct": None,
            "added_p50_ms": None,
            "added_p99_ms": None,
        }
        if base is not None and result["target"] != "echo":
            if base["throughput_rps"]:
                row["throughput_vs_direct"] = round(result["throughput_rps"] / base["throughput_rps"], 3)
            base_cost, cost = _cpu_cost(base, None), _cpu_cost(result, proxy)
            if base_cost and cost:
                row["cpu_cost_vs_direct"] = round(base_cost / cost, 3)
            row["added_p50_ms"] = round(latency["p50"] - base["latency_ms"]["p50"], 3)
            row["added_p99_ms"] = round(latency["p99"] - base["latency_ms"]["p99"], 3)
        if floor is not None and floor["throughput_rps"]:
            row["throughput_vs_floor"] = round(result["throughput_rps"] / floor["throughput_rps"], 3)
            own, hop = row["proxy_cpu_us_per_request"], floor["cpu_us_per_request"].get(PROXY_OF[floor["target"]])
            if own and hop:
                row["proxy_cpu_vs_floor"] = round(own / hop, 3)
        rows.append(row)
    return rows


def across_rounds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path and load, the median and range over the rounds of each ratio (rows of ``compare``).

    The rounds are measured one after another, every path in each (ABAB, not AABB), so a slow spell of the
    machine lands on every path of a round alike; the range says how far one round's ratio can be trusted.
    """
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["load"], row["target"]), []).append(row)
    summary = []
    keys = ("throughput_rps", "throughput_vs_direct", "throughput_vs_floor", "proxy_cpu_vs_floor", "cpu_cost_vs_direct")
    for (mode, load, target), members in groups.items():
        summary.append(
            {
                "mode": mode,
                "load": load,
                "target": target,
                "rounds": len(members),
                "converged": all(m["converged"] for m in members),
                **{key: spread_of([m[key] for m in members]) for key in keys},
                "p99_ms": spread_of([m["latency_ms"]["p99"] for m in members]),
                "proxy_cpu_us_per_request": spread_of([m["proxy_cpu_us_per_request"] for m in members]),
            }
        )
    return summary


def _range(spread: dict[str, float] | None, spec: str = ".2f") -> str:
    if spread is None:
        return "–"
    return f"{spread['median']:{spec}} ({spread['min']:{spec}}–{spread['max']:{spec}})"


def rounds_table(summary: Sequence[dict[str, Any]]) -> str:
    """The medians (and ranges) of ``across_rounds``, one line per path and load."""
    header = (
        *("load", "path", "rounds", "req/s", "× direct", "× floor", "× direct (CPU)", "p99 ms", "proxy CPU-µs/req"),
        "proxy CPU × floor",
    )
    return render_table(
        header,
        summary,
        lambda row: [
            load_cell(row),
            settled(row["target"], row),
            str(row["rounds"]),
            _range(row["throughput_rps"], ",.0f"),
            _range(row["throughput_vs_direct"]),
            _range(row["throughput_vs_floor"]),
            _range(row["cpu_cost_vs_direct"]),
            _range(row["p99_ms"], ".1f"),
            _range(row["proxy_cpu_us_per_request"], ",.0f"),
            _range(row.get("proxy_cpu_vs_floor")),
        ],
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "load",
        "path",
        "req/s",
        "× direct",
        "× floor",
        "× direct (CPU)",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "Triton CPU-µs/req",
        "proxy CPU-µs/req",
        "proxy CPU × floor",
        "loadgen CPU-µs/req",
        "loadgen CPU %",
        "others' CPU %",
        "machine busy %",
        "errors",
    )

    rounds = any(row.get("round", 1) > 1 for row in rows)

    def cells(row: dict[str, Any]) -> list[str]:
        latency = row["latency_ms"]
        return [
            load_cell(row) + (f" (round {row['round']})" if rounds else ""),
            settled(row["target"], row),
            format_value(row["throughput_rps"]),
            format_value(row["throughput_vs_direct"], ".2f"),
            format_value(row.get("throughput_vs_floor"), ".2f"),
            format_value(row["cpu_cost_vs_direct"], ".2f"),
            *(f"{latency[key]:.2f}" for key in ("p50", "p90", "p99")),
            format_value(row["added_p50_ms"], ".2f", signed=True),
            format_value(row["added_p99_ms"], ".2f", signed=True),
            format_value(row["triton_cpu_us_per_request"]),
            format_value(row["proxy_cpu_us_per_request"]),
            format_value(row.get("proxy_cpu_vs_floor"), ".2f"),
            format_value(row["loadgen_cpu_us_per_request"]),
            format_value(row["loadgen_cpu_pct"]),
            format_value(row["other_cpu_pct"]),
            format_value(row["machine_busy_pct"]),
            errors_cell(row),
        ]

    return render_table(header, rows, cells)


def plot(results: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Latency against throughput for every path of this comparison (``common.plot_latency``)."""
    styles = {"echo": "--", **{target: ":" for target in CNN_PATHS}}
    return plot_latency(results, path, title, (*PATHS, *CLOSED_ONLY, "echo", *CNN_PATHS), styles)


def _auto_rates(results: Sequence[dict[str, Any]]) -> tuple[float, ...]:
    best: dict[str, float] = {}
    for result in results:
        if result["target"] in PATHS and result["mode"] == "closed":
            best[result["target"]] = max(best.get(result["target"], 0.0), result["throughput_rps"])
    slowest = min(best.values(), default=0.0)
    return tuple(float(round(slowest * share, -1) or 10) for share in (0.25, 0.5)) if slowest else ()


def run(
    profile: Profile,
    *,
    workers: int,
    batch: int,
    out: Path,
    log: Callable[[str], None],
    command: str | None = None,
    driver: str = "python",
    rounds: int = 1,
) -> dict[str, Any]:
    """Start the stack, measure every point of ``profile``, write the report; returns it.

    ``driver`` "h2load" drives the closed-loop points with ``h2load.H2Load``
    (the C load generator; it has no open loop, so no open-loop points).
    ``rounds`` repeats every closed-loop point (digits, then the CNN) that many
    times, round after round; the report then adds each ratio's median and range
    over the rounds (``across_rounds``). The echo and open-loop points run once.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    started = datetime.datetime.now(datetime.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    results: list[dict[str, Any]] = []
    stopped: str | None = None
    failed = True
    try:
        with stack(work_dir, log) as servers:
            addresses = {name: server.address for name, server in servers.items() if name != "triton"}
            addresses["triton"] = servers["triton"].grpc_url
            targets = {
                name: Target(
                    name,
                    addresses[PROXY_OF[name] or "triton"],
                    ("switchyard" if PROXY_OF[name] in ("switchyard", "converter") else "oip")
                    + ("_stream" if name in STREAMED else ""),
                    model=MODEL,
                    route=BATCHED_ROUTE if name.startswith("switchyard_batched") else ROUTE,
                    batch=batch,
                    check=name != "echo",
                )
                for name in (*PATHS, *CLOSED_ONLY, "echo")
                if name not in STREAMED or driver == "python"
            }
            for name in CNN_PATHS:
                streamed = name.endswith("_stream")
                if streamed and driver != "python":
                    continue
                targets[name] = Target(
                    name,
                    addresses[PROXY_OF[name] or "triton"],
                    ("switchyard" if (PROXY_OF[name] or "").startswith("switchyard") else "oip")
                    + ("_stream" if streamed else ""),
                    model=CNN_MODEL,
                    route=CNN_ROUTE,
                    batch=batch,
                    row_shape=CNN_SHAPE,
                    outputs=("probabilities",),
                )
            pids = {name: server.pid for name, server in servers.items()}
            generator_class = H2Load if driver == "h2load" else LoadGenerator
            with generator_class(workers=workers, servers=pids, log=log) as generator:
                for target in targets.values():
                    generator.probe(target)
                points = [
                    *((name, c, profile.windows) for c in profile.concurrency for name in (*PATHS, *CLOSED_ONLY)),
                    *((name, c, profile.cnn_windows) for c in profile.cnn_concurrency for name in CNN_PATHS),
                ]
                try:
                    _measure_all(generator, targets, points, rounds, profile, driver, results, log)
                except ServerGone as exc:
                    stopped = f"stopped early: {exc}"
                    log(f"{stopped}; the report holds the points measured before")
                totals = {name: cpu_seconds(process_tree(pid)) for name, pid in pids.items()}
        failed = stopped is not None
    finally:
        if failed:
            log(f"logs of the servers are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = compare(results)
    report: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "profile": profile.name,
            "command": command or "python -m benchmarks.run" + ("" if profile.name == "full" else f" --{profile.name}"),
            "machine": machine(),
            "versions": package_versions(),
            "workers": workers,
            "driver": driver,
            "batch": batch,
            "model": MODEL,
            "route": ROUTE,
            "cnn_model": CNN_MODEL,
            "cnn_route": CNN_ROUTE,
            "histogram": "hdr",
            "windows": asdict(profile.windows),
            "rounds": rounds,
            "server_cpu_s_at_end": {name: round(value, 2) for name, value in totals.items()},
            "stopped_early": stopped,
        },
        "results": results,
        "comparison": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"run-{profile.name}-{started.strftime('%Y%m%d-%H%M%S')}"
    table = markdown_table(rows)
    if rounds > 1:
        report["across_rounds"] = summary = across_rounds(rows)
        table += f"\n\nAcross the {rounds} rounds: median (min–max)\n\n" + rounds_table(summary)
    models = [MODEL] * bool(profile.concurrency) + [CNN_MODEL] * bool(profile.cnn_concurrency)
    title = f"{' and '.join(models)} on {os.cpu_count()} CPUs, {profile.name} profile, {started:%Y-%m-%d}"
    report["files"] = {"json": f"{stem.name}.json", "markdown": f"{stem.name}.md"}
    if plot([r for r in results if r.get("round", 1) == 1], stem.with_suffix(".png"), title):
        report["files"]["plot"] = f"{stem.name}.png"
    else:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    if stopped:
        table += f"\n\n**{stopped.capitalize()}** (the servers' logs are kept in {work_dir})."
    stem.with_suffix(".md").write_text(f"{title}\n\n{table}\n")
    print(table, flush=True)
    log("wrote " + ", ".join(str(out / name) for name in report["files"].values()))
    return report


def _measure_all(
    generator: Any,
    targets: dict[str, Target],
    points: Sequence[tuple[str, int, Windows]],
    rounds: int,
    profile: Profile,
    driver: str,
    results: list[dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """Every point of a run, appended to ``results`` as measured: closed loop by rounds, echo, then open loop."""
    for round_number in range(1, rounds + 1):
        for name, concurrency, windows in points:
            if name not in targets:
                continue  # a stream, with h2load
            if name == "triton_stream" and concurrency > TRITON_STREAM_MAX_CONCURRENCY:
                limit = TRITON_STREAM_MAX_CONCURRENCY
                log(f"{name} at c={concurrency}: skipped (Triton's own streams crash it above c={limit})")
                continue
            of_rounds = f", round {round_number} of {rounds}" if rounds > 1 else ""
            log(f"{name}: closed loop, concurrency {concurrency}{of_rounds}")
            result = generator.closed_loop(targets[name], concurrency, windows)
            results.append({**result, "round": round_number})
    if profile.echo and profile.concurrency:
        concurrency = max(profile.concurrency)
        log(f"echo (the load generator's ceiling): closed loop, concurrency {concurrency}")
        results.append(generator.closed_loop(targets["echo"], concurrency, profile.windows))
    rates = _auto_rates(results) if isinstance(profile.rates, str) else profile.rates
    if rates and not isinstance(generator, LoadGenerator):
        log(f"no open-loop points: {driver} drives closed loops only")
        rates = ()
    for rate in rates:
        for name in OPEN_PATHS:
            log(f"{name}: open loop, {rate:g} requests/s")
            results.append(generator.open_loop(targets[name], rate, profile.windows))


def _levels(text: str) -> tuple[int, ...]:
    return () if text == "none" else tuple(int(v) for v in text.split(","))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="about 2 minutes: short windows")
    size.add_argument("--smoke", action="store_true", help="a few seconds per point: checks the pieces, not speed")
    parser.add_argument(
        "--concurrency", help="comma-separated closed-loop concurrencies for digits (default: the profile's), or none"
    )
    parser.add_argument(
        "--cnn-concurrency", help="comma-separated closed-loop concurrencies for the CNN (default: the profile's)"
    )
    parser.add_argument("--rates", help="comma-separated open-loop rates in requests/s, or 'auto' or 'none'")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every closed-loop point this many times, round after round"
    )
    parser.add_argument(
        "--driver",
        choices=("python", "h2load"),
        default="python",
        help="load generator: Python processes (default) or h2load (C; closed loop only)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    profile = PROFILES["short" if args.short else "smoke" if args.smoke else "full"]
    if args.concurrency:
        profile = replace(profile, concurrency=_levels(args.concurrency))
    if args.cnn_concurrency:
        profile = replace(profile, cnn_concurrency=_levels(args.cnn_concurrency))
    if args.rates:
        rates: tuple[float, ...] | str = args.rates
        if args.rates in ("none", ""):
            rates = ()
        elif args.rates != "auto":
            rates = tuple(float(v) for v in args.rates.split(","))
        profile = replace(profile, rates=rates)
    command = " ".join(["python -m benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    report = run(
        profile,
        workers=args.workers,
        batch=args.batch,
        out=args.out,
        log=log_stderr,
        command=command,
        driver=args.driver,
        rounds=args.rounds,
    )
    return 1 if report["meta"]["stopped_early"] else 0


if __name__ == "__main__":
    sys.exit(main())
