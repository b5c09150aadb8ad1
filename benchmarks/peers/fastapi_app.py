"""Peer (c): the image pipeline as a FastAPI service on uvicorn, calling Triton with the async tritonclient.

Usage (in the peers' environment, see ``benchmarks.peers``)::

    python -m benchmarks.peers.fastapi_app --triton-url 127.0.0.1:8001 --port 0

The common hand-written approach: one uvicorn process (``--workers N``: N
sharing the listening socket; uvloop and httptools,
as ``uvicorn[standard]`` picks them), ``POST /classify`` with the encoded
image as the body, the shared pre/post code of ``pipeline.py`` and one
``tritonclient.grpc.aio`` client per process. Answers JSON: the three best
labels, indices and scores. Prints ``serving on HOST:PORT`` once it accepts
connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

# Module level, not inside make_app: FastAPI resolves the handler's (string) annotations in this module's globals.
from fastapi import FastAPI, Request

from benchmarks.peers.pipeline import TritonPipeline


def make_app(triton_url: str, address: str) -> FastAPI:
    state: dict[str, TritonPipeline] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["pipeline"] = TritonPipeline(triton_url)  # inside the running loop
        print(f"serving on {address}", flush=True)
        yield
        await state["pipeline"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, list[Any]]:
        return await state["pipeline"].classify(await request.body())

    return app


def app_from_env() -> FastAPI:
    """The app for uvicorn's worker processes (``--workers``), which import it by name."""
    return make_app(os.environ["PEER_TRITON_URL"], os.environ["PEER_ADDRESS"])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers.fastapi_app", description=__doc__.splitlines()[0])
    parser.add_argument("--triton-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes sharing the socket")
    args = parser.parse_args(argv)
    # Bound and listening before uvicorn starts, so the port is known (also for --port 0) when the app says so.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ.update(PEER_TRITON_URL=args.triton_url, PEER_ADDRESS=f"{host}:{port}")
        app = "benchmarks.peers.fastapi_app:app_from_env"
        config = uvicorn.Config(
            app, factory=True, workers=args.workers, log_level="warning", access_log=False, backlog=2048
        )
        Multiprocess(config, sockets=[sock]).run()
        return 0
    config = uvicorn.Config(
        make_app(args.triton_url, f"{host}:{port}"), log_level="warning", access_log=False, backlog=2048
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
