"""What Triton itself counted for a model: the tests' proof of how often the backend ran."""

from __future__ import annotations

from dataclasses import dataclass

import tritonclient.grpc as triton_grpc


@dataclass(frozen=True)
class ModelCounts:
    """Triton's statistics for one model, summed over its versions."""

    requests: int
    """Requests answered successfully (``inference_stats.success.count``)."""
    inferences: int
    """Batch items inferred (``inference_count``): rows, whatever the batching."""
    executions: int
    """Model executions (``execution_count``): fewer than requests when Triton batched them."""


def model_counts(triton_url: str, model: str) -> ModelCounts:
    client = triton_grpc.InferenceServerClient(triton_url)
    try:
        stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"]
    finally:
        client.close()
    return ModelCounts(
        requests=sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats),
        inferences=sum(int(s.get("inference_count", 0)) for s in stats),
        executions=sum(int(s.get("execution_count", 0)) for s in stats),
    )
