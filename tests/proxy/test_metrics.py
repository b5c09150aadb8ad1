"""Deferred metrics (worker processes): after a flush they read exactly as direct updates would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from switchyard.proxy.metrics import DeferredCounter, DeferredGauge, DeferredHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.5, 2.0, 0.001, 7.0]


def _families(deferred: bool) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["r"], registry=registry).labels("x")
    gauge = Gauge("g", "g", ["r"], registry=registry).labels("x")
    histogram = Histogram("h", "h", ["r"], buckets=BUCKETS, registry=registry).labels("x")
    if deferred:
        counter, gauge, histogram = DeferredCounter(counter), DeferredGauge(gauge), DeferredHistogram(histogram)  # type: ignore[assignment]
    for value in VALUES:
        counter.inc(2)
        gauge.inc()
        histogram.observe(value)
    gauge.dec(3)
    if deferred:
        for metric in (counter, gauge, histogram):
            metric.flush()  # type: ignore[attr-defined]
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_a_flush_gives_what_direct_updates_give() -> None:
    assert _families(deferred=True) == _families(deferred=False)


def test_nothing_reaches_the_registry_before_a_flush_and_a_second_flush_adds_nothing() -> None:
    registry = CollectorRegistry()
    child = Counter("c", "c", registry=registry)
    counter = DeferredCounter(child)
    counter.inc(5)
    assert registry.get_sample_value("c_total") == 0
    counter.flush()
    counter.flush()
    assert registry.get_sample_value("c_total") == 5
