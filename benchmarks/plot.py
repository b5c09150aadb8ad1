"""The results page's figures, drawn from the reports' JSON: throughput against concurrency, CPU per request, batching.

Usage::

    python -m benchmarks.plot REPORT.json [REPORT.json ...] --out benchmarks/figures

Each report is recognised by what it holds: a ``benchmarks.run`` report
(``comparison`` rows with a ``target``) gives ``throughput.png`` (closed-loop
throughput against concurrency, one line per path: direct Triton, the floor,
the gateway's routes; the CNN on its own axes, as bars when it has one
concurrency) and ``cpu_per_request.png`` (CPU-µs per request of Triton and of
the hop, stacked, per path at the highest concurrency every path of the model
reached); a ``benchmarks.patterns``
report with the ``default_batching`` comparison gives ``batching.png`` (p50
and throughput of the default route and of ``batching = false`` against
concurrency). Medians over rounds where a point was measured several times.
``benchmarks.suite`` draws them after its parts; this command redraws them
from any reports. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CNN_PREFIX = "cnn_"
BATCHING_COMPARISON = "default_batching"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def closed_medians(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[float, float]]:
    """Per path, per concurrency: the median of ``row[key]`` over rounds (closed-loop rows that have it)."""
    values: dict[str, dict[float, list[float]]] = {}
    for row in rows:
        if row.get("mode") == "closed" and row.get(key) is not None:
            values.setdefault(row["target"], {}).setdefault(float(row["load"]), []).append(float(row[key]))
    return {
        target: {load: statistics.median(found) for load, found in sorted(loads.items())}
        for target, loads in values.items()
    }


def _caption(report: dict[str, Any]) -> str:
    meta = report.get("meta", {})
    cpus = meta.get("machine", {}).get("cpus", "?")
    return f"{meta.get('command', '')} — {meta.get('started', '')[:16].replace('T', ' ')} UTC, {cpus} CPUs"


def plot_throughput(report: dict[str, Any], path: Path) -> None:
    """Closed-loop throughput against concurrency per path of a ``benchmarks.run`` report (the CNN apart)."""
    plt = _pyplot()
    medians = closed_medians(report["comparison"], "throughput_rps")
    digits = {t: m for t, m in medians.items() if not t.startswith(CNN_PREFIX) and t != "echo"}
    cnn = {t: m for t, m in medians.items() if t.startswith(CNN_PREFIX)}
    panels = [(name, lines) for name, lines in (("digits_logreg", digits), ("image_cnn", cnn)) if lines]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for axis, (model, lines) in zip(axes[0], panels, strict=True):
        loads = sorted({load for points in lines.values() for load in points})
        if len(loads) == 1:  # one concurrency: bars, one per path
            names = list(lines)
            axis.bar(names, [lines[name][loads[0]] for name in names])
            axis.tick_params(axis="x", rotation=30, labelsize=7)
            axis.set_ylabel("throughput (requests/s)")
            axis.set_title(f"{model}, c={loads[0]:g}")
            axis.grid(True, axis="y", alpha=0.3)
            continue
        for target, points in lines.items():
            style = "--" if target.startswith(("triton", "cnn_triton", "floor", "cnn_floor", "converter")) else "-"
            axis.plot(list(points), list(points.values()), marker="o", linestyle=style, label=target)
        axis.set_xscale("log", base=2)
        axis.set_xticks(loads)
        axis.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_xlabel("concurrency (calls in flight)")
        axis.set_ylabel("throughput (requests/s)")
        axis.set_title(model)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Throughput against concurrency, closed loop\n" + _caption(report), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_cpu(report: dict[str, Any], path: Path) -> None:
    """CPU-µs per request of Triton and of the hop, stacked, per path at one concurrency (and the CNN's)."""
    plt = _pyplot()
    rows = report["comparison"]
    triton = closed_medians(rows, "triton_cpu_us_per_request")
    proxy = closed_medians(rows, "proxy_cpu_us_per_request")
    panels = []
    for model, cnn in (("digits_logreg", False), ("image_cnn", True)):
        targets = [t for t in triton if t.startswith(CNN_PREFIX) == cnn and t != "echo"]
        common = set.intersection(*(set(triton[t]) for t in targets)) if targets else set()
        if common:
            panels.append((model, targets, max(common)))
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for axis, (model, targets, load) in zip(axes[0], panels, strict=True):
        own = [triton[t][load] for t in targets]
        hop = [proxy.get(t, {}).get(load, 0.0) for t in targets]
        axis.bar(targets, own, label="Triton")
        axis.bar(targets, hop, bottom=own, label="hop (floor, converter or gateway)")
        for index, (a, b) in enumerate(zip(own, hop, strict=True)):
            axis.annotate(f"{a + b:,.0f}", (index, a + b), ha="center", va="bottom", fontsize=7)
        axis.set_ylabel("CPU-µs per request")
        axis.set_title(f"{model}, c={load:g}")
        axis.tick_params(axis="x", rotation=30, labelsize=7)
        axis.legend(fontsize=8)
        axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle("CPU per request, by process\n" + _caption(report), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_batching(report: dict[str, Any], path: Path) -> None:
    """p50 and throughput of the default route and of ``batching = false`` against concurrency (medians)."""
    plt = _pyplot()
    summary = report[BATCHING_COMPARISON]
    loads = [row["load"] for row in summary]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for axis, key, label in ((axes[0], "p50_ms", "p50 latency (ms)"), (axes[1], "throughput_rps", "requests/s")):
        for route, suffix, style in (("batching = false", "off", "--"), ("default (micro-batching)", "default", "-")):
            values = [row[f"{key}_{suffix}"]["median"] if row[f"{key}_{suffix}"] else None for row in summary]
            axis.plot(loads, values, marker="o", linestyle=style, label=route)
        ratio_key = "p50_ratio" if key == "p50_ms" else "throughput_ratio"
        for row in summary:
            ratio = row[ratio_key]
            top = row[f"{key}_default"]
            if ratio and top:
                axis.annotate(f"×{ratio['median']:.2f}", (row["load"], top["median"]), fontsize=8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(loads)
        axis.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_xlabel("concurrency (calls in flight)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("digits: micro-batching on by default vs batching = false\n" + _caption(report), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw(reports: Sequence[Path], out: Path) -> list[Path]:
    """Every figure the ``reports`` allow, into ``out``; the files written (the last report of a kind wins)."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for report_path in reports:
        report = json.loads(report_path.read_text())
        rows = report.get("comparison")
        if isinstance(rows, list) and rows and "target" in rows[0]:
            plot_throughput(report, out / "throughput.png")
            plot_cpu(report, out / "cpu_per_request.png")
            written.update(throughput=out / "throughput.png", cpu=out / "cpu_per_request.png")
        if report.get(BATCHING_COMPARISON):
            plot_batching(report, out / "batching.png")
            written["batching"] = out / "batching.png"
    return list(written.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="reports' JSON (benchmarks.run, benchmarks.patterns)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    args = parser.parse_args(argv)
    written = draw(args.reports, args.out)
    if not written:
        parser.error("none of the reports holds what a figure needs (a benchmarks.run or patterns report)")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
