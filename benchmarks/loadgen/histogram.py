"""Latency histograms: HDR histograms (``hdrhistogram``, µs, 3 significant digits) that travel between processes.

Owns recording, merging, percentiles and the JSON-safe form a worker sends to
the parent; not the windows they are kept per (``results``).
"""

from __future__ import annotations

from typing import Any

HISTOGRAM_MAX_US = 600_000_000
"""Longest latency the histograms hold (10 minutes); longer ones are clamped."""


class LatencyHistogram:
    """Microsecond latencies in an HDR histogram (1 µs to ``HISTOGRAM_MAX_US``, 3 significant digits)."""

    kind = "hdr"

    def __init__(self) -> None:
        # Imported here so that the commands which never measure latency (benchmarks.preprocess) run without it.
        try:
            from hdrh.histogram import HdrHistogram
        except ImportError as exc:
            raise ImportError("the load generator needs hdrhistogram: pip install -e '.[bench]'") from exc
        self._hdr: Any = HdrHistogram(1, HISTOGRAM_MAX_US, 3)

    def record(self, value_us: int) -> None:
        self._hdr.record_value(min(max(int(value_us), 1), HISTOGRAM_MAX_US))

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    @property
    def max_us(self) -> int:
        return int(self._hdr.get_max_value()) if self.count else 0

    def percentile_us(self, percent: float) -> int:
        return int(self._hdr.get_value_at_percentile(percent)) if self.count else 0

    def add(self, other: LatencyHistogram) -> None:
        self._hdr.add(other._hdr)

    def summary_ms(self) -> dict[str, float]:
        """p50, p90, p99 and max in milliseconds."""
        values = {f"p{p:g}": self.percentile_us(p) for p in (50, 90, 99)}
        values["max"] = self.max_us
        return {key: round(value / 1000.0, 3) for key, value in values.items()}

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe form (the HDR histogram's compressed base64 encoding) for :meth:`from_payload`."""
        return {"kind": self.kind, "data": self._hdr.encode().decode("ascii") if self.count else ""}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> LatencyHistogram:
        if payload.get("kind") != cls.kind:
            raise ValueError(f"not an HDR histogram payload: kind {payload.get('kind')!r}")
        histogram = cls()
        if payload["data"]:
            histogram._hdr.decode_and_add(payload["data"].encode("ascii"))
        return histogram
