"""Concurrent calls through the gateway reach Triton as dynamic batches larger than 1."""

from __future__ import annotations

import asyncio

import grpc

from switchyard.models.datasets import digits_split
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc
from switchyard.v1.tensors import from_numpy

from .triton_stats import model_counts

CONCURRENCY = 64
ROUNDS = 4


async def _load(target: str) -> None:
    _, x_test, _, _ = digits_split()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for _ in range(ROUNDS):
            calls = [
                stub.Infer(pb.InferRequest(route="digits", inputs=[from_numpy("image", x_test[i : i + 1])]), timeout=30)
                for i in range(CONCURRENCY)
            ]
            replies = await asyncio.gather(*calls)
            assert all(r.outputs for r in replies)


def test_concurrent_calls_are_batched_by_triton(gateway_thread, local_triton) -> None:  # type: ignore[no-untyped-def]
    before = model_counts(local_triton.grpc_url, "digits_logreg")
    asyncio.run(_load(gateway_thread.target))
    after = model_counts(local_triton.grpc_url, "digits_logreg")
    inferences = after.inferences - before.inferences
    executions = after.executions - before.executions
    print(f"\n{inferences} inferences in {executions} model executions (mean batch {inferences / executions:.1f})")
    assert inferences == CONCURRENCY * ROUNDS
    assert executions < inferences, "every request ran alone: no dynamic batching happened"
