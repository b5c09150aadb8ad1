"""Routes and helpers shared by the job tests: a slow route made of a real feature, and metric reads.

``digits_slow`` is the digits classifier behind the gateway's micro-batcher
with a 1 s window and no eager dispatch: a lone request waits the whole
window before its (real) Triton call, so a job on it stays RUNNING about a
second — long enough to cancel it or to kill its process mid-job.
"""

from __future__ import annotations

from pathlib import Path

ROUTES = """
[[routes]]
name = "digits"
model = "digits_logreg"

[[routes]]
name = "digits_slow"
model = "digits_logreg"
description = "digits, held up to 1 s by the micro-batching window"
batching = { max_delay_ms = 1000.0, max_batch = 64, eager = false }
"""


def write_routes(folder: Path) -> Path:
    path = folder / "jobs_routes.toml"
    path.write_text(ROUTES)
    return path
