"""Per-call context: request id, deadline and stage timings.

Built by the service for each request and passed down the route, so every
backend call gets the time the caller has left and every stage's duration
lands in the metrics under the route's name.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from switchyard.proxy import metrics


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class CallContext:
    request_id: str
    route: str
    deadline: float
    """``time.monotonic()`` value after which the call has failed."""
    stages: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, request_id: str, route: str, timeout_s: float) -> CallContext:
        return cls(request_id=request_id or new_request_id(), route=route, deadline=time.monotonic() + timeout_s)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Times a stage (pre, infer, post) into the per-route stage histogram."""
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            self.stages[name] = self.stages.get(name, 0.0) + elapsed
            metrics.STAGE_LATENCY.labels(self.route, name).observe(elapsed)
