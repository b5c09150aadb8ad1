"""Concurrent calls through the gateway reach Triton as dynamic batches larger than 1."""

from __future__ import annotations

import asyncio

import grpc
import tritonclient.grpc as tritongrpc

from switchyard.client.tensors import from_numpy
from switchyard.models.datasets import digits_split
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

CONCURRENCY = 64
ROUNDS = 4


def _counts(triton_url: str, model: str) -> tuple[int, int]:
    client = tritongrpc.InferenceServerClient(triton_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


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
    before = _counts(local_triton.grpc_url, "digits_logreg")
    asyncio.run(_load(gateway_thread.target))
    after = _counts(local_triton.grpc_url, "digits_logreg")
    inferences = after[0] - before[0]
    executions = after[1] - before[1]
    print(f"\n{inferences} inferences in {executions} model executions (mean batch {inferences / executions:.1f})")
    assert inferences == CONCURRENCY * ROUNDS
    assert executions < inferences, "every request ran alone: no dynamic batching happened"
