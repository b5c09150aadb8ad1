"""Large pre/post-processing runs on the gateway's own bounded thread pool; small work stays on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from switchyard.proxy.routes import base
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy


def test_large_inputs_run_on_the_ops_pool_small_ones_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []

    def recording(ops: Sequence[object], tensors: Sequence[pb.Tensor], keep: Sequence[str]) -> list[pb.Tensor]:
        threads.append(threading.current_thread().name)
        return list(tensors)

    monkeypatch.setattr(base, "_run_ops_sync", recording)
    large = from_numpy("x", np.zeros((1, base.OFFLOAD_BYTES // 4 + 1), dtype=np.float32))
    small = from_numpy("x", np.zeros((1, 16), dtype=np.float32))

    async def main() -> None:
        await base.run_ops([], [small], ["x"])
        await asyncio.gather(*(base.run_ops([], [large], ["x"]) for _ in range(8)))

    asyncio.run(main())
    assert threads[0] == threading.main_thread().name
    assert all(name.startswith("switchyard-ops") for name in threads[1:]) and len(threads) == 9
    assert base._offload_pool()._max_workers == base.usable_cpus()  # bounded: one thread per usable CPU
    assert len({name for name in threads[1:]}) <= base.usable_cpus()
