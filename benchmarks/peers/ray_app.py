"""Peer (b): the image pipeline as a Ray Serve deployment, calling Triton with the async tritonclient.

Usage (in the peers' environment, see ``benchmarks.peers``)::

    python -m benchmarks.peers.ray_app --triton-url 127.0.0.1:8001 --port 8000

Starts a local Ray instance (``ray.init``: its GCS, raylet and workers are
children of this process, so their CPU is charged to it), then Ray Serve with
its HTTP proxy on ``--port`` and one replica of ``Classifier`` (``--replicas``):
``POST /classify`` with the encoded image as the body, the shared pre/post
code of ``pipeline.py`` and one ``tritonclient.grpc.aio`` client per replica;
it answers JSON (the three best labels, indices and scores). Prints
``serving on HOST:PORT`` once the application is running, then serves until
SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ray import serve
from starlette.requests import Request


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1024,  # closed-loop concurrency is at most a few dozen: never the limit
    ray_actor_options={"num_cpus": 0},
)
class Classifier:
    def __init__(self, triton_url: str) -> None:
        self._triton_url = triton_url
        self._pipeline: Any = None

    async def __call__(self, request: Request) -> dict[str, list[Any]]:
        if self._pipeline is None:  # created inside the replica's running event loop
            from benchmarks.peers.pipeline import TritonPipeline

            self._pipeline = TritonPipeline(self._triton_url)
        result: dict[str, list[Any]] = await self._pipeline.classify(await request.body())
        return result


def main(argv: Sequence[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.ray_app", description=__doc__.splitlines()[0])
    parser.add_argument("--triton-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs Ray may schedule on (default 2)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the deployment (default 1)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # After ray.init, which installs a SIGTERM handler of its own that ends the driver without shutting Ray down.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = Classifier.options(num_replicas=args.replicas).bind(args.triton_url)
        serve.run(app, name="classifier", route_prefix="/classify")
        print(f"serving on {args.host}:{args.port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
