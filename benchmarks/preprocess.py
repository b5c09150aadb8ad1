"""Pre-processing of 224x224 image batches on NumPy and on CuPy, side by side, transfers included.

Usage::

    python -m benchmarks.preprocess             # batches 1, 8, 32, 64, 128; three rounds of 2 s points
    python -m benchmarks.preprocess --short     # batches 1, 8, 32, 64; two rounds of 0.5 s points (about a minute)
    python -m benchmarks.preprocess --smoke     # batches 1, 4; checks the pieces, numbers meaningless
    python -m benchmarks.preprocess --xp numpy  # one array module only (default: NumPy, and CuPy where a GPU is)

The pipeline is the gateway's own ops (``proxy/ops``), built from ``PIPELINE``
as a route's ``pre`` list would build them: JPEG bytes -> ``decode_image``
(Pillow, on the CPU, at the images' own 300x300) -> ``resize`` to 256x256 ->
``center_crop`` 224x224 -> ``normalize`` (ImageNet mean and std) -> ``layout``
HWC->CHW, giving the FP32 ``[batch, 3, 224, 224]`` a CNN takes. The images are
generated (seeded gradients and noise, JPEG quality 90): what they show does
not change the cost.

For each batch size and array module it times, separately:

* ``decode``: Pillow decoding the batch into a host ``UINT8`` array, the same
  code whatever the array module (``DecodeImage`` always decodes on the CPU);
* ``device``: what runs on the array module, **transfers included**:
  ``to_device`` (host -> GPU copy of the decoded pixels), the four ops, and
  ``to_host`` (the FP32 result back, which is what the gateway does before
  sending a tensor to Triton), synchronised before the clock stops. On NumPy
  the transfers are no-ops;
* the same ``device`` part run **one image at a time** over the batch (what
  the gateway does today: each request's ops run on its own, before
  micro-batching merges the model calls), to show what batching the
  pre-processing would buy on each module.

Every point is repeated for ``seconds`` (at least three times, after a
warm-up that also compiles CuPy's kernels); the figures are the median and
p90 of the repetitions. ``rounds`` runs the whole list again, module after
module within each batch size (ABAB), and CuPy's speed-up over NumPy is taken
within each round, then summarised as the median and range over the rounds.
Before timing, the CuPy result is checked against NumPy's (they must agree
within 1e-4), and the one-at-a-time result against the batched one.

Writes ``preprocess-<profile>-<time>.json``, ``.md`` and ``.png`` (images/s
against batch size; needs matplotlib) into ``benchmarks/results/`` (or
``--out``), with the device and the date. Without a usable CuPy the CuPy rows
are left out and the report says why.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.common import DEFAULT_OUT, log_stderr, render_table, report_meta, spread_of, write_report
from switchyard.proxy.ops import Op, build_op
from switchyard.proxy.ops.array_module import to_device, to_host

SOURCE_SIDE = 300
"""The generated images are SOURCE_SIDE x SOURCE_SIDE RGB JPEGs."""
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PIPELINE: list[dict[str, Any]] = [
    {"op": "decode_image", "tensor": "image", "output": "pixels", "channels": 3, "size": [SOURCE_SIDE, SOURCE_SIDE]},
    {"op": "resize", "tensor": "pixels", "size": [256, 256]},
    {"op": "center_crop", "tensor": "pixels", "size": [224, 224]},
    {"op": "normalize", "tensor": "pixels", "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    {"op": "layout", "tensor": "pixels", "order": "HWC->CHW"},
]
"""The ops, as a route's ``pre`` list; the first decodes (host), the rest run on the array module."""
RESULT = "pixels"
MODES = ("batched", "per_image")


@dataclass(frozen=True)
class Profile:
    name: str
    batches: tuple[int, ...]
    seconds: float
    rounds: int
    warmup: int = 3


PROFILES = {
    "full": Profile("full", (1, 8, 32, 64, 128), seconds=2.0, rounds=3),
    "short": Profile("short", (1, 8, 32, 64), seconds=0.5, rounds=2),
    "smoke": Profile("smoke", (1, 4), seconds=0.05, rounds=1, warmup=1),
}


def build_pipeline() -> tuple[Op, list[Op]]:
    """The decode op and the device ops of ``PIPELINE``, built as the gateway builds a route's ops."""
    ops = [
        build_op(spec["op"], {k: v for k, v in spec.items() if k != "op"}, f"pre[{i}]")
        for i, spec in enumerate(PIPELINE)
    ]
    return ops[0], ops[1:]


def generated_images(count: int, side: int = SOURCE_SIDE, seed: int = 0) -> list[bytes]:
    """``count`` distinct RGB JPEGs (seeded gradients plus noise), ``side`` x ``side`` pixels each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    images = []
    for i in range(count):
        base = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1), np.full((side, side), 16.0 * i)])
        pixels = np.clip(base.transpose(1, 2, 0) + rng.normal(0, 24, (side, side, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def decode(op: Op, images: Sequence[bytes]) -> np.ndarray:
    """The host part: the images decoded by ``op`` into ``UINT8 [n, H, W, 3]`` on the CPU."""
    arrays = op.apply({op.tensor: np.array(list(images), dtype=np.object_)}, np)
    return np.asarray(arrays[op.target])


def device_part(ops: Sequence[Op], pixels: np.ndarray, xp: ModuleType) -> np.ndarray:
    """Host pixels -> ``xp`` -> the ops -> the FP32 result back on the host (what the gateway sends on)."""
    arrays = {RESULT: to_device(pixels, xp)}
    for op in ops:
        arrays = op.apply(arrays, xp)
    return to_host(arrays[RESULT])


def per_image(ops: Sequence[Op], pixels: np.ndarray, xp: ModuleType) -> np.ndarray:
    """``device_part`` one image at a time, as each request's ops run today; stacked for comparison."""
    return np.concatenate([device_part(ops, pixels[i : i + 1], xp) for i in range(len(pixels))])


def cupy_module() -> tuple[ModuleType | None, str]:
    """CuPy and the device it runs on, or None and why not."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy not usable here ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "CuPy found no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    memory = props["totalGlobalMem"] / 2**30
    return (
        cupy,
        f"{name} ({memory:.0f} GiB), CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, CuPy {cupy.__version__}",
    )


def time_call(call: Callable[[], Any], seconds: float, warmup: int, minimum: int = 3) -> list[float]:
    """Seconds per call of ``call``, repeated for ``seconds`` (at least ``minimum`` times) after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < minimum or time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def _point(xp_name: str, mode: str, batch: int, round_index: int, times: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(times)
    median = statistics.median(ordered)
    return {
        "xp": xp_name,
        "mode": mode,
        "batch": batch,
        "round": round_index,
        "repetitions": len(ordered),
        "median_ms": median * 1e3,
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3,
        "images_per_s": batch / median,
    }


def measure(
    profile: Profile, modules: dict[str, ModuleType], log: Callable[[str], None], images: Sequence[bytes] | None = None
) -> list[dict[str, Any]]:
    """Every point of ``profile``: decode once per batch size, then each module's device part, both modes, per round.

    Raises ``AssertionError`` when a module's result differs from NumPy's, or one-at-a-time from batched.
    """
    decoder, ops = build_pipeline()
    images = list(images) if images is not None else generated_images(max(profile.batches))
    points = []
    decoded: dict[int, np.ndarray] = {}
    for batch in profile.batches:
        pixels = decoded[batch] = decode(decoder, images[:batch])
        reference = device_part(ops, pixels, np)
        for name, xp in modules.items():
            got = device_part(ops, pixels, xp)
            if not _agree(got, reference, atol=1e-4):
                raise AssertionError(f"{name} differs from NumPy at batch {batch}: {_difference(got, reference)}")
            one_by_one = per_image(ops, pixels, xp)
            if not _agree(one_by_one, got, atol=1e-5):
                raise AssertionError(f"{name}: one image at a time differs from the batch at batch {batch}")
    for round_index in range(profile.rounds):
        for batch in profile.batches:
            batch_images = images[:batch]
            times = time_call(functools.partial(decode, decoder, batch_images), profile.seconds, profile.warmup)
            points.append(_point("host", "decode", batch, round_index, times))
            for name, xp in modules.items():
                for mode in MODES:
                    run_once = device_part if mode == "batched" else per_image
                    call = functools.partial(run_once, ops, decoded[batch], xp)
                    times = time_call(call, profile.seconds, profile.warmup)
                    points.append(_point(name, mode, batch, round_index, times))
                    log(f"round {round_index + 1} batch {batch} {name} {mode}: {points[-1]['median_ms']:.2f} ms")
    return points


def _agree(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=atol))


def _difference(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shape {list(a.shape)} against {list(b.shape)}"
    return f"max |diff| {float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))):.3g}"


def summarise(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (module, mode, batch): medians over rounds, and ratios taken within each round.

    ``x_numpy`` is NumPy's time over this row's, same mode, batch and round (CuPy's speed-up; 1 on NumPy);
    ``x_per_image`` is the one-at-a-time time over the batched time (what batching the ops buys);
    ``total_images_per_s`` adds the host decode of the same batch and round to the device part.
    """
    by_key = {(p["xp"], p["mode"], p["batch"], p["round"]): p for p in points}
    rows = []
    for xp_name, mode, batch in dict.fromkeys((p["xp"], p["mode"], p["batch"]) for p in points):
        if xp_name == "host":
            continue
        mine = [p for p in points if (p["xp"], p["mode"], p["batch"]) == (xp_name, mode, batch)]
        x_numpy, x_per_image, totals, decode_ms = [], [], [], []
        for p in mine:
            numpy_point = by_key.get(("numpy", mode, batch, p["round"]))
            x_numpy.append(numpy_point["median_ms"] / p["median_ms"] if numpy_point else None)
            other = by_key.get((xp_name, "per_image", batch, p["round"]))
            x_per_image.append(other["median_ms"] / p["median_ms"] if other and mode == "batched" else None)
            decoded = by_key.get(("host", "decode", batch, p["round"]))
            totals.append(batch / ((p["median_ms"] + decoded["median_ms"]) / 1e3) if decoded else None)
            decode_ms.append(decoded["median_ms"] if decoded else None)
        rows.append(
            {
                "xp": xp_name,
                "mode": mode,
                "batch": batch,
                "rounds": len(mine),
                "median_ms": statistics.median(p["median_ms"] for p in mine),
                "p90_ms": statistics.median(p["p90_ms"] for p in mine),
                "images_per_s": statistics.median(p["images_per_s"] for p in mine),
                "decode_ms": statistics.median(ms for ms in decode_ms if ms is not None),
                "x_numpy": spread_of(x_numpy),
                "x_per_image": spread_of(x_per_image),
                "total_images_per_s": spread_of(totals),
            }
        )
    return rows


def _cell(spread: dict[str, float] | None, spec: str) -> str:
    if spread is None:
        return "–"
    text = format(spread["median"], spec)
    if spread["min"] != spread["max"]:
        text += f" ({format(spread['min'], spec)}–{format(spread['max'], spec)})"
    return text


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "batch",
        "module",
        "ops run",
        "device part ms",
        "p90 ms",
        "images/s",
        "× NumPy",
        "× one at a time",
        "decode ms",
        "images/s with decode",
    )
    ordered = sorted(rows, key=lambda r: (r["batch"], r["mode"] != "batched", r["xp"] != "numpy"))
    return render_table(
        header,
        ordered,
        lambda row: (
            str(row["batch"]),
            row["xp"],
            "whole batch" if row["mode"] == "batched" else "one image at a time",
            f"{row['median_ms']:,.2f}",
            f"{row['p90_ms']:,.2f}",
            f"{row['images_per_s']:,.0f}",
            _cell(row["x_numpy"], ".2f"),
            _cell(row["x_per_image"], ".2f"),
            f"{row['decode_ms']:,.2f}",
            _cell(row["total_images_per_s"], ",.0f"),
        ),
    )


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Images/s of the device part against batch size, one line per module and mode; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for xp_name, mode in dict.fromkeys((r["xp"], r["mode"]) for r in rows):
        points = sorted((r for r in rows if (r["xp"], r["mode"]) == (xp_name, mode)), key=lambda r: r["batch"])
        style = "-" if mode == "batched" else ":"
        axis.plot(
            [r["batch"] for r in points],
            [r["images_per_s"] for r in points],
            style,
            marker="o",
            label=f"{xp_name}, {mode}",
        )
    axis.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in rows})
    axis.set_xticks(batches, [str(b) for b in batches])
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axis.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    axis.tick_params(axis="y", which="minor", labelsize=7)
    axis.set_xlabel("batch size (224x224 images)")
    axis.set_ylabel("images/s, device part (transfers included)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def run(
    profile: Profile, *, xp_names: Sequence[str], out: Path, log: Callable[[str], None], command: str
) -> dict[str, Any]:
    """Measure, write ``preprocess-<profile>-<time>.json/.md/.png`` into ``out`` and return the report."""
    started = datetime.datetime.now(datetime.UTC)
    modules: dict[str, ModuleType] = {}
    cupy, device = cupy_module()
    skipped = None
    for name in xp_names:
        if name == "numpy":
            modules["numpy"] = np
        elif cupy is not None:
            modules["cupy"] = cupy
        else:
            skipped = device
    log(f"preprocess: {', '.join(modules)}; device: {device}")
    points = measure(profile, modules, log)
    rows = summarise(points)
    meta = report_meta(
        started, profile.name, command, 1, device=device if cupy is not None else None, cupy_skipped=skipped
    )
    report: dict[str, Any] = {"meta": meta, "points": points, "rows": rows}
    title = (
        f"# Pre-processing of 224x224 batches, {profile.name} profile, {started:%Y-%m-%d %H:%M} UTC\n\n"
        f"CPU: {meta['machine']['cpu_model']} ({meta['machine']['cpus']} CPUs); "
        f"GPU: {device if cupy is not None else 'none'}" + (f"; CuPy rows left out: {skipped}" if skipped else "")
    )
    heading = title.splitlines()[0].lstrip("# ")
    write_report(
        out,
        f"preprocess-{profile.name}",
        report,
        title,
        markdown_table(rows),
        log,
        lambda path: plot(rows, path, heading),
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="batches 1-64, two rounds of 0.5 s points")
    size.add_argument("--smoke", action="store_true", help="batches 1 and 4: checks the pieces, not speed")
    parser.add_argument("--xp", default="numpy,cupy", help="array modules, comma-separated (default numpy,cupy)")
    parser.add_argument("--batches", help="comma-separated batch sizes (default: the profile's)")
    parser.add_argument("--rounds", type=int, help="rounds (default: the profile's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    profile = PROFILES["short" if args.short else "smoke" if args.smoke else "full"]
    xp_names = [name for name in args.xp.split(",") if name]
    if not xp_names or set(xp_names) - {"numpy", "cupy"}:
        parser.error("--xp takes numpy and/or cupy")
    if args.batches:
        batches = tuple(int(v) for v in args.batches.split(","))
        if min(batches) < 1:
            parser.error("--batches must be positive")
        profile = Profile(profile.name, batches, profile.seconds, profile.rounds, profile.warmup)
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        profile = Profile(profile.name, profile.batches, profile.seconds, args.rounds, profile.warmup)
    command = " ".join(["python -m benchmarks.preprocess", *(sys.argv[1:] if argv is None else argv)])
    run(profile, xp_names=xp_names, out=args.out, log=log_stderr, command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
