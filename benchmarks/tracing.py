"""What tracing costs per call: the gateway's span sites with tracing off (the default) and on.

    python -m benchmarks.tracing            # prints microseconds per timed stage and per traced call

Runs in-process, without Triton: one timed stage (``CallContext.stage``, its
histogram included) and one call's span sites (the call span, ``validate``,
one stage and the ``traceparent`` for Triton), each with tracing off and then
on (an SDK provider without exporter, so only the gateway's side is measured).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from switchyard.proxy import tracing
from switchyard.proxy.lifecycle.context import CallContext


def _best_us(fn: Callable[[], None], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def measure(number: int) -> dict[str, dict[str, float]]:
    """Microseconds per timed stage and per call's span sites, tracing off and on."""
    from opentelemetry.sdk.trace import TracerProvider

    ctx = CallContext.start("id", "route", 10.0)

    def stage() -> None:
        with ctx.stage("pre"):
            pass
        ctx.spans.clear()

    def call() -> None:
        with tracing.call_span("route", "id"):
            with tracing.span("validate"):
                pass
            stage()
            if tracing.tracer is not None:
                tracing.outgoing()

    results: dict[str, dict[str, float]] = {}
    previous = tracing.tracer
    try:
        tracing.disable()
        results["off"] = {"stage_us": _best_us(stage, number), "call_us": _best_us(call, number)}
        tracing.enable(TracerProvider())
        results["on"] = {"stage_us": _best_us(stage, number), "call_us": _best_us(call, number)}
    finally:
        tracing.tracer = previous
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.tracing", description=__doc__)
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing (default 20000)")
    args = parser.parse_args(argv)
    for state, numbers in measure(args.number).items():
        print(f"tracing {state}: {numbers['stage_us']:.2f} us per timed stage, {numbers['call_us']:.2f} us per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
