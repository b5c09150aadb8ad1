"""Triton-side features: dynamic batching on and off, one and two instances, side by side in one run.

Usage::

    python -m benchmarks.triton_features            # c = 1, 8, 32, 128; 3 s warm-up, 5 s windows
    python -m benchmarks.triton_features --short    # c = 8, 32; 1 s warm-up, 1.5 s windows (about 2 minutes)
    python -m benchmarks.triton_features --smoke    # seconds per point: checks the pieces, numbers meaningless
    python -m benchmarks.triton_features --short --cnn   # image_cnn's four variants too (at c = 32)

The bundled ``digits_logreg`` is built once into a temporary folder (as
``benchmarks.run`` builds it) and copied there under three more names, each
with one edit to its ``config.pbtxt`` and nothing else changed (the same
``model.onnx``, the same Python-backend runner, ``max_batch_size`` 64):

* ``digits_logreg``: the bundled configuration, dynamic batching (preferred
  sizes 8-64, 2 ms queue delay) and 2 instances; every ratio is against it;
* ``digits_logreg_nobatch``: no ``dynamic_batching`` block (every request is
  executed on its own), 2 instances;
* ``digits_logreg_1inst``: dynamic batching, ``instance_group`` count 1;
* ``digits_logreg_nobatch_1inst``: neither.

One Triton serves all of them. At each concurrency the variants are measured
one after another with the load generator of ``benchmarks.loadgen``, directly on
Triton's gRPC port (``ModelInfer``, one row of 64 FP32 pixels, as the
``triton`` path of ``benchmarks.run``), same windows method. Besides
throughput, latency and Triton's CPU per request, each row gives the mean
number of requests Triton executed together (from its ``nv_inference_count``
and ``nv_inference_exec_count`` metrics over the point). Writes
``triton-features-<profile>-<time>.json``, ``.md`` and ``.png`` (with matplotlib) into
``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CNN_MODEL,
    CNN_SHAPE,
    DEFAULT_OUT,
    MODEL,
    PROFILES,
    STARTUP_TIMEOUT_S,
    errors_cell,
    format_value,
    log_stderr,
    render_table,
    report_meta,
    settled,
    write_report,
)
from benchmarks.loadgen import LoadGenerator, Target, Windows


@dataclass(frozen=True)
class Variant:
    """A Triton-side configuration of one model: dynamic batching on or off, how many instances."""

    suffix: str
    dynamic_batching: bool
    instances: int


VARIANTS = (
    Variant("", True, 2),
    Variant("_nobatch", False, 2),
    Variant("_1inst", True, 1),
    Variant("_nobatch_1inst", False, 1),
)
"""In the order they are measured at each concurrency; the first is the bundled configuration."""

SHORT_CONCURRENCY = (8, 32)
SMOKE_CONCURRENCY = (2,)

_NAME = re.compile(r'^name: "[^"]*"$', re.MULTILINE)
_DYNAMIC_BATCHING = re.compile(r"^dynamic_batching \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)
_INSTANCE_COUNT = re.compile(r"count: \d+")
_METRIC = re.compile(r'^(nv_inference_count|nv_inference_exec_count)\{model="([^"]+)",version="[^"]*"\} (\S+)$')


def variant_config(config: str, name: str, variant: Variant) -> str:
    """``config`` (a bundled model's ``config.pbtxt``) renamed to ``name`` and edited to ``variant``."""
    edited, renamed = _NAME.subn(f'name: "{name}"', config)
    edited, counted = _INSTANCE_COUNT.subn(f"count: {variant.instances}", edited)
    if not variant.dynamic_batching:
        edited, removed = _DYNAMIC_BATCHING.subn("", edited)
        if removed != 1:
            raise ValueError("config.pbtxt has no dynamic_batching block to remove")
    if renamed != 1 or counted != 1:
        raise ValueError(f"config.pbtxt does not hold exactly one name and one instance count:\n{config}")
    return edited


def add_variants(repository: Path, model: str) -> dict[str, Variant]:
    """Copy ``repository/model`` once per non-default variant, with its edited config; every name's variant."""
    source = repository / model
    config = (source / "config.pbtxt").read_text(encoding="utf-8")
    names = {}
    for variant in VARIANTS:
        name = model + variant.suffix
        if name != model:
            shutil.copytree(source, repository / name)
            (repository / name / "config.pbtxt").write_text(variant_config(config, name, variant), encoding="utf-8")
        names[name] = variant
    return names


def inference_counts(metrics_url: str) -> dict[str, tuple[float, float]]:
    """Per model, Triton's (requests, executions) so far, from its Prometheus metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    counts: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match:
            counts.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return {
        name: (c.get("nv_inference_count", 0.0), c.get("nv_inference_exec_count", 0.0)) for name, c in counts.items()
    }


def compare(results: Sequence[dict[str, Any]], models: dict[str, tuple[str, Variant]]) -> list[dict[str, Any]]:
    """One row per point, with its throughput against the default variant's at the same concurrency.

    ``models`` gives each measured model's base model and variant.
    """
    default = {(r["model"], r["concurrency"]): r for r in results if models[r["model"]][0] == r["model"]}
    rows = []
    for result in results:
        base_model, variant = models[result["model"]]
        base = default.get((base_model, result["concurrency"]))
        ratio = None
        if base is not None and base["throughput_rps"]:
            ratio = round(result["throughput_rps"] / base["throughput_rps"], 3)
        rows.append(
            {
                "load": result["concurrency"],
                "model": result["model"],
                "dynamic_batching": variant.dynamic_batching,
                "instances": variant.instances,
                "throughput_rps": result["throughput_rps"],
                "throughput_vs_default": ratio,
                "latency_ms": result["latency_ms"],
                "triton_cpu_us_per_request": result["cpu_us_per_request"].get("triton"),
                "requests_per_execution": result["requests_per_execution"],
                "loadgen_cpu_us_per_request": result["loadgen"]["cpu_us_per_request"],
                "other_cpu_pct": result["other_cpu_pct"],
                "errors": result["errors"],
                "converged": result["converged"],
            }
        )
    return rows


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("load", lambda row: f"c={row['load']:g}"),
    ("model", lambda row: settled(row["model"], row)),
    ("dynamic batching", lambda row: "on" if row["dynamic_batching"] else "off"),
    ("instances", lambda row: str(row["instances"])),
    ("req/s", lambda row: format_value(row["throughput_rps"])),
    ("× default", lambda row: format_value(row["throughput_vs_default"], ".2f")),
    ("p50 ms", lambda row: f"{row['latency_ms']['p50']:.2f}"),
    ("p99 ms", lambda row: f"{row['latency_ms']['p99']:.2f}"),
    ("Triton CPU-µs/req", lambda row: format_value(row["triton_cpu_us_per_request"])),
    ("requests/execution", lambda row: format_value(row["requests_per_execution"], ".1f")),
    ("loadgen CPU-µs/req", lambda row: format_value(row["loadgen_cpu_us_per_request"])),
    ("others' CPU %", lambda row: format_value(row["other_cpu_pct"])),
    ("errors", errors_cell),
)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    return render_table([title for title, _ in COLUMNS], rows, lambda row: [cell(row) for _, cell in COLUMNS])


@dataclass(frozen=True)
class Plan:
    """What one run measures: each base model's variants at these concurrencies and windows."""

    model: str
    concurrency: tuple[int, ...]
    windows: Windows


def _target(name: str, address: str, base: str, batch: int) -> Target:
    if base == CNN_MODEL:
        return Target(name, address, "oip", model=name, batch=batch, row_shape=CNN_SHAPE, outputs=("probabilities",))
    return Target(name, address, "oip", model=name, batch=batch)


def run(
    profile_name: str,
    plans: Sequence[Plan],
    *,
    workers: int,
    batch: int,
    out: Path,
    log: Callable[[str], None],
    command: str,
) -> dict[str, Any]:
    """Build the variants, start one Triton, measure every plan, write the report; returns it."""
    from switchyard.models.build import MODELS, build_repository
    from switchyard.server.local_triton import LocalTriton

    started = datetime.datetime.now(datetime.UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-triton-features-"))
    results: list[dict[str, Any]] = []
    models: dict[str, tuple[str, Variant]] = {}
    failed = True
    try:
        base_models = [plan.model for plan in plans]
        log(f"building {' and '.join(base_models)} and their variants")
        repository = build_repository(work_dir / "models", [spec for spec in MODELS if spec.name in base_models])
        for base in base_models:
            models.update({name: (base, variant) for name, variant in add_variants(repository, base).items()})
        triton = LocalTriton(repository, work_dir=work_dir / "triton")
        log(f"starting Triton with {len(models)} models")
        triton.start_sync()
        try:
            triton.wait_ready_sync(STARTUP_TIMEOUT_S)
            metrics_url = f"http://{triton.host}:{triton.metrics_port}/metrics"
            assert triton.pid is not None
            with LoadGenerator(workers=workers, servers={"triton": triton.pid}, log=log) as generator:
                for plan in plans:
                    names = [name for name, (base, _) in models.items() if base == plan.model]
                    targets = [_target(name, triton.grpc_url, plan.model, batch) for name in names]
                    for target in targets:
                        generator.probe(target)
                    for concurrency in plan.concurrency:
                        for target in targets:
                            log(f"{target.name}: closed loop, concurrency {concurrency}")
                            before = inference_counts(metrics_url).get(target.name, (0.0, 0.0))
                            result = generator.closed_loop(target, concurrency, plan.windows)
                            after = inference_counts(metrics_url).get(target.name, (0.0, 0.0))
                            executions = after[1] - before[1]
                            result["model"] = target.name
                            result["requests_per_execution"] = (
                                round((after[0] - before[0]) / executions, 2) if executions else None
                            )
                            results.append(result)
        finally:
            triton.stop_sync()
        failed = False
    finally:
        if failed:
            log(f"Triton's log and the built models are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = compare(results, models)
    report: dict[str, Any] = {
        "meta": report_meta(
            started,
            profile_name,
            command,
            workers,
            batch=batch,
            variants=[asdict(variant) for variant in VARIANTS],
            plans=[{**asdict(plan), "windows": asdict(plan.windows)} for plan in plans],
        ),
        "results": results,
        "comparison": rows,
    }
    cpus = report["meta"]["machine"]["cpus"]
    title = f"Triton-side features on {cpus} CPUs, {profile_name} profile, {started:%Y-%m-%d}"
    write_report(out, f"triton-features-{profile_name}", report, title, markdown_table(rows), log)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triton_features", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="c = 8 and 32, short windows")
    size.add_argument("--smoke", action="store_true", help="a few seconds per point: checks the pieces, not speed")
    parser.add_argument("--concurrency", help="comma-separated closed-loop concurrencies (default: the profile's)")
    parser.add_argument("--cnn", action="store_true", help=f"also {CNN_MODEL}'s variants, at the profile's CNN levels")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    profile = PROFILES["short" if args.short else "smoke" if args.smoke else "full"]
    levels = SHORT_CONCURRENCY if args.short else SMOKE_CONCURRENCY if args.smoke else profile.concurrency
    if args.concurrency:
        levels = tuple(int(v) for v in args.concurrency.split(","))
    plans = [Plan(MODEL, levels, profile.windows)]
    if args.cnn:
        plans.append(Plan(CNN_MODEL, profile.cnn_concurrency, profile.cnn_windows))
    command = " ".join(["python -m benchmarks.triton_features", *(sys.argv[1:] if argv is None else argv)])
    run(profile.name, plans, workers=args.workers, batch=args.batch, out=args.out, log=log_stderr, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
