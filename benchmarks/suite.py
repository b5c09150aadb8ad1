"""The whole benchmark suite, one part after another, with one index of every part's report.

Usage::

    python -m benchmarks.suite --short          # the target points, short windows (a few minutes)
    python -m benchmarks.suite                  # every part's full profile
    python -m benchmarks.suite --smoke          # seconds per point: checks that every part runs
    python -m benchmarks.suite --short --driver h2load    # run and peers driven by h2load
    python -m benchmarks.suite --short --only run,peers   # some parts

The parts, in order (each its own process, each starting and stopping its
own Triton and servers, so one part's load never overlaps another's):

1. ``run``: Triton direct, the floor, the gateway and its micro-batched
   route on digits, then the CNN (``benchmarks.run``);
2. ``oip``: the Open Inference Protocol front against Triton, the same
   ``ModelInfer`` load from the same client code (``benchmarks.oip``);
3. ``triton_features``: dynamic batching on/off and one/two instances
   (``benchmarks.triton_features``);
4. ``patterns``: fan-out, caches, coalescing, streaming, workers
   (``benchmarks.patterns``);
5. ``peers``: the image pipeline against FastAPI, Ray Serve and KServe
   (``benchmarks.peers``), when the peers' environment exists
   (``python -m benchmarks.peers --setup``); otherwise skipped, and the index
   says so;
6. ``preprocess``: 224x224 image pre-processing on NumPy and, where a GPU is,
   CuPy, transfers included (``benchmarks.preprocess``; no servers).

``--short`` runs every part's short profile (short windows) at the loads
the targets are judged at (``SHORT_POINTS``: c = 32, and c = 1 for the
latency a hop adds), a few minutes in all; run a part alone for its other
levels. ``--driver h2load`` is passed to the parts that take it (``run``, ``oip``, ``peers``).
A part that fails does not stop the others; the suite then exits 1 and the
index names it. Writes ``suite-<profile>-<time>.md`` (every part's command,
outcome and table) and ``.json`` (the same, with each part's report files)
into ``benchmarks/results/`` (or ``--out``), and the results page's figures
(``benchmarks.plot``: throughput against concurrency, CPU per request,
micro-batching on and off) from the ``run`` and ``patterns`` reports into
``suite-<profile>-<time>-figures/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_OUT, REPO_ROOT, log_stderr
from benchmarks.peers import PEERS_VENV, peers_python

PARTS = ("run", "oip", "triton_features", "patterns", "peers", "preprocess")
"""In the order they run."""
FIGURED = ("run", "patterns")
"""The parts whose reports the figures are drawn from (``benchmarks.plot``)."""
DRIVEN = ("run", "oip", "peers")
"""The parts that take ``--driver``."""
PROFILES = ("full", "short", "smoke")
SHORT_POINTS = {
    "run": ["--concurrency", "1,32"],
    "oip": ["--concurrency", "1,32"],
    "triton_features": ["--concurrency", "32"],
    "patterns": ["--highest-load"],
    "peers": ["--concurrency", "32"],
    "preprocess": [],
}
"""What the suite's ``--short`` adds to each part's ``--short``: only the loads the targets are judged at."""


@dataclass
class Step:
    """One part of the suite: the command that runs it, or why it does not run."""

    part: str
    command: list[str]
    skipped: str | None = None
    returncode: int | None = None
    seconds: float = 0.0
    reports: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.skipped is None and self.returncode != 0

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "command": " ".join(["python", *self.command[1:]]),
            "skipped": self.skipped,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 1),
            "reports": self.reports,
        }


def plan(
    profile: str, parts: Sequence[str], *, driver: str, out: Path, peers_ready: bool, python: str = sys.executable
) -> list[Step]:
    """The steps of a suite run, in order; ``peers`` is skipped (with the reason) unless ``peers_ready``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    steps = []
    for part in PARTS:
        if part not in parts:
            continue
        command = [python, "-m", f"benchmarks.{part}", "--out", str(out)]
        if profile != "full":
            command.append(f"--{profile}")
        if profile == "short":
            command += SHORT_POINTS[part]
        if part in DRIVEN and driver != "python":
            command += ["--driver", driver]
        skipped = None
        if part == "peers" and not peers_ready:
            skipped = f"no peers' environment at {PEERS_VENV} (python -m benchmarks.peers --setup makes it)"
        steps.append(Step(part, command, skipped))
    return steps


def run_steps(steps: Sequence[Step], out: Path, log: Callable[[str], None]) -> None:
    """Run each step not skipped, in turn, recording its outcome and the report files it wrote into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for step in steps:
        if step.skipped:
            log(f"suite: {step.part} skipped: {step.skipped}")
            continue
        log(f"suite: {step.part}: {' '.join(step.command[1:])}")
        before = set(out.iterdir())
        started = time.monotonic()
        step.returncode = subprocess.run(step.command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL).returncode
        step.seconds = time.monotonic() - started
        step.reports = sorted(path.name for path in set(out.iterdir()) - before)
        log(f"suite: {step.part} {'failed' if step.failed else 'done'} in {step.seconds:.0f} s")


def index_markdown(steps: Sequence[Step], out: Path, title: str) -> str:
    """The suite's index: every part's command and outcome, then each part's own table."""
    lines = [title, "", "| part | outcome | seconds | command |", "|---|---|---|---|"]
    for step in steps:
        outcome = "skipped" if step.skipped else ("failed" if step.failed else "done")
        seconds = "–" if step.skipped else f"{step.seconds:.0f}"
        lines.append(f"| {step.part} | {outcome} | {seconds} | `{step.to_json()['command']}` |")
    for step in steps:
        lines += ["", f"## {step.part}", ""]
        if step.skipped:
            lines.append(f"Skipped: {step.skipped}.")
            continue
        tables = [name for name in step.reports if name.endswith(".md")]
        if step.failed:
            lines.append(f"Failed (exit status {step.returncode}); its output is above the index in the log.")
        lines += [(out / name).read_text().rstrip() for name in tables] or ["No report written."]
    return "\n".join(lines) + "\n"


def draw_figures(steps: Sequence[Step], out: Path, stem: str, log: Callable[[str], None] = log_stderr) -> list[Path]:
    """The results page's figures (``benchmarks.plot``) from the reports of ``run`` and ``patterns``, into
    ``out/<stem>-figures``; none without matplotlib or those reports."""
    reports = [out / name for step in steps if step.part in FIGURED for name in step.reports if name.endswith(".json")]
    if not reports:
        return []
    try:
        from benchmarks import plot

        written = plot.draw(reports, out / f"{stem}-figures")
    except ImportError as exc:
        log(f"suite: no figures ({exc}; matplotlib is in the bench extra)")
        return []
    log("suite: figures " + ", ".join(str(path) for path in written))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="the target points, short windows (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="every part's smoke profile: checks the pieces, not speed")
    parser.add_argument("--only", help=f"comma-separated parts, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--driver", choices=("python", "h2load"), default="python", help="load generator of run, peers")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    profile = "short" if args.short else "smoke" if args.smoke else "full"
    parts = [p for p in args.only.split(",") if p] if args.only else list(PARTS)
    try:
        steps = plan(profile, parts, driver=args.driver, out=args.out, peers_ready=peers_python().exists())
    except ValueError as exc:
        parser.error(str(exc))
    started = datetime.datetime.now(datetime.UTC)
    run_steps(steps, args.out, log_stderr)
    stem = args.out / f"suite-{profile}-{started:%Y%m%d-%H%M%S}"
    title = f"# Benchmark suite, {profile} profile, {started:%Y-%m-%d %H:%M} UTC"
    stem.with_suffix(".md").write_text(index_markdown(steps, args.out, title))
    index = {"started": started.isoformat(timespec="seconds"), "profile": profile, "driver": args.driver}
    index["parts"] = [step.to_json() for step in steps]
    index["figures"] = [str(path.relative_to(args.out)) for path in draw_figures(steps, args.out, stem.name)]
    stem.with_suffix(".json").write_text(json.dumps(index, indent=2) + "\n")
    failed = [step.part for step in steps if step.failed]
    log_stderr(f"suite: wrote {stem.with_suffix('.md')}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
