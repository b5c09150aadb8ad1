"""What the benchmark commands share: measurement profiles, server processes, tables and report files.

Owns starting a server as a child process (``ServerProcess``: it prints
``serving on HOST:PORT`` once listening, and dies with its parent), the
``switchyard serve`` command line the benchmarks run, the Markdown tables with
their "did not settle" mark, the report's ``meta`` (machine, versions) and
writing a report's ``.json``, ``.md`` and ``.png``. What a benchmark measures
stays in its own module.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Windows

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
"""Where reports go by default (ignored by git but for the dated folders of committed results)."""
MODEL = "digits_logreg"
CNN_MODEL = "image_cnn"
CNN_SHAPE = (3, 224, 224)

_SERVING = re.compile(r"serving on (\S+):(\d+)")
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Profile:
    name: str
    concurrency: tuple[int, ...]
    windows: Windows
    rates: tuple[float, ...] | str = ()
    """Open-loop rates (requests/s), or "auto": a quarter and a half of the slowest path's best closed-loop rate."""
    echo: bool = True
    cnn_concurrency: tuple[int, ...] = (32,)
    """Closed-loop concurrencies for the CNN paths (about 10 ms of model CPU per request: fewer, longer points)."""
    cnn_windows: Windows = Windows(warmup_s=2.0, window_s=2.5)


PROFILES = {
    "full": Profile(
        "full",
        (1, 8, 32, 128),
        Windows(warmup_s=3.0, window_s=5.0),
        rates="auto",
        cnn_concurrency=(8, 32),
        cnn_windows=Windows(warmup_s=3.0, window_s=5.0),
    ),
    "short": Profile("short", (1, 8, 32), Windows(warmup_s=1.0, window_s=1.5)),
    "smoke": Profile(
        "smoke",
        (1, 4),
        Windows(warmup_s=0.3, window_s=0.4, max_windows=3),
        rates=(50.0,),
        cnn_concurrency=(2,),
        cnn_windows=Windows(warmup_s=0.5, window_s=0.5, max_windows=3),
    ),
}


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this process dies (no orphaned servers)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


@dataclass
class ServerProcess:
    """A server started as a child process that prints ``serving on HOST:PORT`` on stdout once listening."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, name: str, command: Sequence[str], work_dir: Path, env: dict[str, str]) -> ServerProcess:
        out_path, log_path = work_dir / f"{name}.out", work_dir / f"{name}.log"
        with open(out_path, "wb") as out, open(log_path, "wb") as log:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                cwd=REPO_ROOT,
                env=env,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            match = _SERVING.search(out_path.read_text(errors="replace"))
            if match:
                return cls(name, process, f"{match.group(1)}:{match.group(2)}", log_path)
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{name} did not start (exit status {process.returncode}); its log ends:\n{tail}")
            time.sleep(0.05)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def child_env() -> dict[str, str]:
    """This environment without SWITCHYARD_* settings: the gateway runs with its defaults."""
    return {key: value for key, value in os.environ.items() if not key.startswith("SWITCHYARD_")}


def gateway_command(triton_url: str, routes: Path) -> list[str]:
    """``switchyard serve`` on a free loopback port, metrics off, with the routes file ``routes``."""
    return [
        *(sys.executable, "-m", "switchyard.server.cli", "serve", "--triton-url", triton_url),
        *("--host", "127.0.0.1", "--port", "0", "--no-metrics", "--config", str(routes), "--grace-s", "1"),
    ]


def spread_of(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that are not None (None when there are none)."""
    present = [value for value in values if value is not None]
    return {"median": statistics.median(present), "min": min(present), "max": max(present)} if present else None


def load_cell(row: dict[str, Any]) -> str:
    """A table's load column: ``c=32`` for a closed-loop point, ``400/s open`` for an open-loop one."""
    return f"c={row['load']:g}" if row["mode"] == "closed" else f"{row['load']:g}/s open"


def format_value(value: float | None, spec: str = ",.0f", signed: bool = False) -> str:
    if value is None:
        return "–"
    return format(value, ("+" if signed else "") + spec)


NOT_SETTLED = "† the last three windows did not agree within the tolerance; figures from them anyway"


def settled(name: str, row: dict[str, Any]) -> str:
    """``name``, marked † when the point's windows did not settle."""
    return name + ("" if row["converged"] else " †")


def errors_cell(row: dict[str, Any]) -> str:
    return ", ".join(f"{code} {count}" for code, count in row["errors"].items()) or "0"


def render_table(
    header: Sequence[str], rows: Sequence[dict[str, Any]], cells: Callable[[dict[str, Any]], Sequence[str]]
) -> str:
    """A markdown table of ``rows`` (one line each from ``cells``), with the † note when a point did not settle.

    Rows without ``converged`` (points not measured in windows) count as settled.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    if any(not row.get("converged", True) for row in rows):
        lines += ["", NOT_SETTLED]
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    versions = {}
    for package in ("grpcio", "tritonclient", "nvidia-pytriton", "uvloop", "hdrhistogram", "switchyard"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def cpu_model_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The machine a report was measured on (for its ``meta``)."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def report_meta(started: datetime.datetime, profile: str, command: str, workers: int, **extra: Any) -> dict[str, Any]:
    """The ``meta`` of a report: when, which profile and command, the machine, versions, then ``extra``."""
    return {
        "started": started.isoformat(timespec="seconds"),
        "profile": profile,
        "command": command,
        "machine": machine(),
        "versions": package_versions(),
        "workers": workers,
        **extra,
    }


def write_report(
    out: Path,
    prefix: str,
    report: dict[str, Any],
    title: str,
    table: str,
    log: Callable[[str], None],
    draw: Callable[[Path], bool] | None = None,
) -> None:
    """Write ``report`` as ``out/<prefix>-<start time>.json``, ``title`` and ``table`` as ``.md``; print the table.

    ``draw(path)`` writes the ``.png`` and says whether it could (matplotlib may be missing). By default, the
    closed-loop points of ``report["results"]`` are plotted (latency against throughput, one line per target,
    in the order they were measured).
    """
    started = datetime.datetime.fromisoformat(report["meta"]["started"])
    stem = f"{prefix}-{started:%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = {"json": f"{stem}.json", "markdown": f"{stem}.md"}
    if draw is None:
        results = report.get("results", [])
        targets = list(dict.fromkeys(result["target"] for result in results))

        def draw(path: Path) -> bool:
            return bool(targets) and plot_latency(results, path, title, targets)

    if draw(out / f"{stem}.png"):
        report["files"]["plot"] = f"{stem}.png"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"{title}\n\n{table}\n")
    print(table, flush=True)
    log("wrote " + ", ".join(str(out / name) for name in report["files"].values()))


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plot_latency(
    results: Sequence[dict[str, Any]],
    path: Path,
    title: str,
    targets: Sequence[str],
    styles: dict[str, str] | None = None,
) -> bool:
    """Latency (p50 and p99) against throughput, one line per path; False when matplotlib is missing.

    ``targets`` orders the lines, each drawn from its closed-loop points; ``styles`` gives some a line style.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for target in targets:
        points = sorted(
            (r for r in results if r["target"] == target and r["mode"] == "closed"), key=lambda r: r["concurrency"]
        )
        if not points:
            continue
        x = [r["throughput_rps"] for r in points]
        for axis, key in zip(axes, ("p50", "p99"), strict=True):
            y = [r["latency_ms"][key] for r in points]
            style = (styles or {}).get(target, "-")
            line = axis.plot(x, y, marker="o", linestyle=style, label=target)[0]
            for r, xi, yi in zip(points, x, y, strict=True):
                axis.annotate(f"c={r['concurrency']}", (xi, yi), fontsize=7, color=line.get_color())
    for axis, key in zip(axes, ("p50", "p99"), strict=True):
        axis.set_xlabel("throughput (requests/s)")
        axis.set_ylabel(f"{key} latency (ms)")
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        axis.tick_params(axis="y", which="minor", labelsize=7)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
