"""Where the gateway's CPU goes on the passthrough route: py-spy samples under closed-loop load.

Usage::

    pip install -e '.[bench]'                # py-spy comes with the bench extra
    python -m benchmarks.profile             # c=32 for about 20 s on route "digits", top 15 entries
    python -m benchmarks.profile --native --top 25 --concurrency 8 --duration 30
    python -m benchmarks.profile --route cnn              # or digits_pipeline[_batched] (the image pipeline)

It starts the same stack as ``benchmarks.run`` (``stack``: the bundled
``digits_logreg`` and ``image_cnn`` in a local Triton, the gateway as its own
process with ``--no-metrics`` and the routes of ``benchmarks.run`` and
``benchmarks.peers``; the floor and echo servers start too and stay idle),
drives ``Gateway/Infer`` on route ``--route`` (default ``digits``) in closed loop
with the load generator of ``loadgen.py``, and meanwhile runs
``py-spy record --pid <gateway> --format raw --nolineno`` over the whole load
window (warm-up included). py-spy needs to ptrace the gateway: run as root, or
allow it (``kernel.yama.ptrace_scope=0``, or ``CAP_SYS_PTRACE`` in a container).

The samples (collapsed stacks, one ``frame;frame;... count`` line per stack,
only threads that were running: py-spy leaves idle ones out) are grouped by
function and file (py-spy shortens paths to the package part) and ranked by
self time (the sample's leaf frame) and by inclusive time (anywhere on the
stack, counted once per sample; the entry frames that every stack of a thread
shares, such as runpy, the CLI and the event loop's ``run``, are left out of
that table). The tables are printed and written, with
the raw file (feed it to ``flamegraph.pl`` or speedscope.app), to
``benchmarks/results/profile-<UTC time>.{txt,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.loadgen import LoadGenerator, Target, Windows
from benchmarks.peers import pipeline
from benchmarks.run import (
    BATCHED_ROUTE,
    CNN_MODEL,
    CNN_ROUTE,
    CNN_SHAPE,
    DEFAULT_OUT,
    MODEL,
    ROUTE,
    _cpu_model,
    _stderr,
    _versions,
    stack,
)

ROUTES = (ROUTE, BATCHED_ROUTE, CNN_ROUTE, pipeline.ROUTE, pipeline.BATCHED_ROUTE)
"""Routes that can be profiled: digits passthrough (default) and micro-batched, the CNN passthrough, the image
pipeline (plain and micro-batched)."""


def route_target(route: str, address: str) -> Target:
    """The load generator's target for ``route`` on the gateway at ``address``."""
    if route == CNN_ROUTE:
        return Target(
            "switchyard",
            address,
            "switchyard",
            model=CNN_MODEL,
            route=route,
            row_shape=CNN_SHAPE,
            outputs=("probabilities",),
        )
    if route in (pipeline.ROUTE, pipeline.BATCHED_ROUTE):
        from switchyard.models.datasets import digits_png, digits_split

        png = digits_png(digits_split().X_test[:1])[0]
        return Target(
            "switchyard",
            address,
            "switchyard",
            route=route,
            input_name=pipeline.INPUT,
            payload=png,
            outputs=pipeline.OUTPUTS,
        )
    return Target("switchyard", address, "switchyard", model=MODEL, route=route)


_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")
_ABSOLUTE_PACKAGE = re.compile(r"^.*?/(?:site-packages|dist-packages|lib/python\d+\.\d+)/")


@dataclass(frozen=True)
class Profile:
    """Aggregated py-spy samples: counts per ``function (file)`` key."""

    samples: int
    self_counts: Counter[str]
    inclusive_counts: Counter[str]
    scaffolding: frozenset[str]
    """Entry frames on every stack of their thread (runpy, the CLI, the event loop's run): left out of inclusive."""


def _shorten(file: str) -> str:
    """A package-relative path: ``.../site-packages/grpc/aio/_server.py`` -> ``grpc/aio/_server.py``."""
    short = _ABSOLUTE_PACKAGE.sub("", file)
    repo = str(Path(__file__).resolve().parent.parent) + os.sep
    return short[len(repo) :] if short.startswith(repo) else short


def frame_key(frame: str) -> str:
    """``function (file)`` for a py-spy frame, with the path shortened; native frames keep their library."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    function, file = match.group("function"), match.group("file")
    file = re.sub(r":\d+$", "", file)  # a line number, in case the raw file was recorded without --nolineno
    if re.fullmatch(r"0x[0-9a-f]+", function):
        function = "<native>"  # an unnamed address in a stripped library (with --native): grouped per library
    return f"{function} ({_shorten(file)})"


def _root(frames: Sequence[str]) -> str:
    """What identifies a stack's thread: its first named frame (with --native, libc's unnamed entry comes first)."""
    return next((frame for frame in frames if not frame.startswith("<native> (")), frames[0])


def parse_raw(lines: Iterable[str]) -> Profile:
    """Aggregate py-spy's raw (collapsed stack) output: ``root;...;leaf count`` per line.

    Each stack's scaffolding is the prefix that every stack with the same root frame shares (for the main
    thread: runpy, the CLI, the event loop's ``run``); it is left out of that stack's inclusive counts only, so
    a stray stack with an odd root (native unwinding can cut one short) hides nothing from the others.
    """
    stacks: list[tuple[list[str], int]] = []
    prefixes: dict[str, list[str]] = {}
    root_samples: Counter[str] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack_text, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [frame_key(frame) for frame in stack_text.split(";") if frame]
        # Thread and process frames (with --threads / --subprocesses) are not functions.
        frames = [frame for frame in frames if not frame.startswith(("thread (", "process "))]
        if not frames:
            continue
        root = _root(frames)
        stacks.append((frames, count))
        root_samples[root] += count
        prefix = prefixes.setdefault(root, frames[:-1])
        common = 0
        while common < min(len(prefix), len(frames) - 1) and prefix[common] == frames[common]:
            common += 1
        del prefix[common:]
    samples = sum(count for _, count in stacks)
    self_counts: Counter[str] = Counter()
    inclusive_counts: Counter[str] = Counter()
    for frames, count in stacks:
        self_counts[frames[-1]] += count
        for frame in set(frames[len(prefixes[_root(frames)]) :]):
            inclusive_counts[frame] += count
    # Listed in the report: the scaffolding of roots that hold at least 1% of the samples.
    scaffolding = frozenset(
        frame for root, prefix in prefixes.items() if root_samples[root] * 100 >= samples for frame in prefix
    )
    return Profile(samples, self_counts, inclusive_counts, scaffolding)


def table(counts: Counter[str], samples: int, top: int, title: str) -> str:
    """A Markdown table of the ``top`` entries of ``counts``, as a share of all ``samples``."""
    lines = [f"| # | {title} % | samples | function (file) |", "|---|---|---|---|"]
    for rank, (key, count) in enumerate(counts.most_common(top), start=1):
        share = 100.0 * count / samples if samples else 0.0
        lines.append(f"| {rank} | {share:.1f} | {count:,} | `{key}` |")
    return "\n".join(lines)


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]' (or pip install py-spy)")
    return found


def record(
    pid: int, raw_path: Path, duration_s: int, rate: int, native: bool, log: Callable[[str], None]
) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``duration_s`` seconds, writing collapsed stacks to ``raw_path``."""
    # --subprocesses: `serve` runs the gateway in worker processes under it.
    command = [_py_spy(), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--nolineno"]
    command += ["--duration", str(duration_s), "--rate", str(rate), "--output", str(raw_path)]
    if native:
        command.append("--native")
    log("running " + " ".join(command[1:]))
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def profile(
    *,
    route: str = ROUTE,
    gateway_name: str = "switchyard",
    concurrency: int,
    duration_s: int,
    workers: int,
    rate: int,
    native: bool,
    top: int,
    out: Path,
    log: Callable[[str], None],
) -> str:
    """Start the stack, sample the gateway under load, write and return the report."""
    started = datetime.datetime.now(datetime.UTC)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"profile-{started.strftime('%Y%m%d-%H%M%S')}"
    raw_path = stem.with_suffix(".txt")
    warmup_s = 2.0
    window_s = (duration_s - warmup_s) / 3
    windows = Windows(warmup_s=warmup_s, window_s=window_s, max_windows=3, agreeing=3)
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-profile-"))
    try:
        with stack(work_dir, log) as servers:
            gateway = servers[gateway_name]
            target = route_target(route, gateway.address)
            with LoadGenerator(workers=workers, servers={"switchyard": gateway.pid}, log=log) as generator:
                generator.probe(target)
                spy = record(gateway.pid, raw_path, duration_s, rate, native, log)
                time.sleep(0.5)  # let py-spy attach before the load starts
                log(f"{gateway_name} ({route}): closed loop, concurrency {concurrency}, about {duration_s} s")
                result = generator.closed_loop(target, concurrency, windows)
                spy_output, _ = spy.communicate(timeout=duration_s + 60)
                if spy.returncode != 0 or not raw_path.exists():
                    raise SystemExit(f"py-spy failed ({spy.returncode}):\n{spy_output.decode(errors='replace')}")
        shutil.rmtree(work_dir, ignore_errors=True)
    except BaseException:
        log(f"logs of the servers are kept in {work_dir}")
        raise

    with open(raw_path) as raw:
        samples = parse_raw(raw)
    expected = rate * duration_s
    header = [
        f"python -m benchmarks.profile --concurrency {concurrency} --duration {duration_s} --rate {rate}"
        + (f" --route {route}" if route != ROUTE else "")
        + (f" --gateway {gateway_name}" if gateway_name != "switchyard" else "")
        + (" --native" if native else ""),
        f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({_cpu_model()}), {platform.platform()}, "
        f"Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in _versions().items()),
        f"load: {result['throughput_rps']:,.0f} req/s, p50 {result['latency_ms']['p50']:.2f} ms, "
        f"p99 {result['latency_ms']['p99']:.2f} ms, gateway "
        f"{result['cpu_us_per_request'].get('switchyard', 0):,.0f} CPU-µs/req (errors: {result['errors'] or 0})",
        f"samples: {samples.samples:,} of {expected:,} possible ({rate}/s for {duration_s} s; "
        f"{100.0 * samples.samples / expected:.0f}% of the window on CPU in Python threads)",
    ]
    report = "\n\n".join(
        [
            "\n".join(header),
            "By self time (the frame that was running):\n\n" + table(samples.self_counts, samples.samples, top, "self"),
            "By inclusive time (anywhere on the stack; not counting the entry frames common to every stack of"
            " their thread: "
            + ", ".join(f"`{frame}`" for frame in sorted(samples.scaffolding))
            + "):\n\n"
            + table(samples.inclusive_counts, samples.samples, top, "incl."),
        ]
    )
    stem.with_suffix(".md").write_text(report + "\n")
    print(report, flush=True)
    log(f"wrote {raw_path} (raw collapsed stacks) and {stem.with_suffix('.md')}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--route", choices=ROUTES, default=ROUTE, help=f"route to load (default {ROUTE})")
    parser.add_argument(
        "--gateway",
        choices=("switchyard", "switchyard_shm"),
        default="switchyard",
        help="gateway process to sample: the plain one (default) or the one with --triton-shared-memory system",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop callers (default 32)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load and sampling (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--native", action="store_true", help="also sample C/Cython frames (py-spy --native)")
    parser.add_argument("--top", type=int, default=15, help="entries per table (default 15)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.duration < 5:
        parser.error("--duration must be at least 5 s")
    profile(
        route=args.route,
        gateway_name=args.gateway,
        concurrency=args.concurrency,
        duration_s=args.duration,
        workers=args.workers,
        rate=args.rate,
        native=args.native,
        top=args.top,
        out=args.out,
        log=_stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
