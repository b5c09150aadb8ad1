"""Load generator of test_chaos, run as its own process: ``python chaos_load.py TARGET CONCURRENCY DEADLINE_S``.

``CONCURRENCY`` closed loops of ``Infer`` on route ``digits`` from one
grpc.aio client (one uvloop, the only one in this process), each call with a
``DEADLINE_S`` deadline; after a failed call a loop pauses ``ERROR_PAUSE_S``
as a polite client would. Until stdin closes, it writes one line per event
to stdout, times in ``time.monotonic()`` seconds (the same clock in every
process on Linux): ``S <loop> <started>`` when a call starts and
``E <loop> <started> <ended> <code>`` when it ends. Then it waits for the
calls in flight, prints ``DONE`` and exits.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import grpc
import numpy as np
import uvloop

from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.channel import channel_options
from switchyard.v1.tensors import from_numpy

ERROR_PAUSE_S = 0.05
REQUEST = pb.InferRequest(route="digits", inputs=[from_numpy("image", np.zeros((1, 64), np.float32))])


async def _loop(stub: gateway_pb2_grpc.GatewayStub, number: int, deadline_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        print(f"S {number} {started:.6f}")
        try:
            await stub.Infer(REQUEST, timeout=deadline_s)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        print(f"E {number} {started:.6f} {time.monotonic():.6f} {code}")
        if code != "OK":
            await asyncio.sleep(ERROR_PAUSE_S)


async def main(target: str, concurrency: int, deadline_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await asyncio.gather(*(_loop(stub, i, deadline_s, stop) for i in range(concurrency)))
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
