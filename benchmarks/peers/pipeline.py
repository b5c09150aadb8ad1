"""The image pipeline every contender serves: PNG bytes -> digit, with the gateway's own op code.

PNG bytes -> ``decode_image`` (grayscale, 32x32) -> ``resize`` (8x8) ->
``normalize`` (grey levels back to the 0..16 the model was trained on) ->
``reshape`` ([1, 64]) -> ``digits_logreg`` on Triton -> ``topk`` (3 best
classes with their names).

``PRE_OPS`` and ``POST_OPS`` are the single description of it: the Switchyard
route (``routes_toml``) is rendered from them, and the peers build the very
same op objects from them (``Pipeline``) and run them with NumPy, so every
contender runs the same pre- and post-processing code and differs only in how
it serves. This module is imported in the main environment (the runner) and
in the peers' environment (the peer servers); it needs ``switchyard``
(installed without dependencies there), NumPy, Pillow, pydantic and, for
``TritonPipeline``, ``tritonclient[grpc]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL = "digits_logreg"
"""The classifier on Triton."""

ROUTE = "digits_pipeline"
"""The Switchyard route, and the name the KServe transformer is served under."""

BATCHED_ROUTE = "digits_pipeline_batched"
"""The same route with gateway-side micro-batching."""

INPUT = "png"
MODEL_INPUT = "image"
MODEL_OUTPUT = "probabilities"
TOP = "top"
OUTPUTS = (f"{TOP}_labels", f"{TOP}_indices", f"{TOP}_scores")
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

PRE_OPS: list[dict[str, Any]] = [
    {"op": "decode_image", "tensor": INPUT, "output": "pixels", "channels": 1, "size": [32, 32]},
    {"op": "resize", "tensor": "pixels", "size": [8, 8]},
    # 16 / 255: PNG grey levels back to the 0..16 range of the training pixels.
    {"op": "normalize", "tensor": "pixels", "scale": 16 / 255, "mean": 0.0, "std": 1.0},
    {"op": "reshape", "tensor": "pixels", "output": MODEL_INPUT, "shape": [-1, 64]},
]
POST_OPS: list[dict[str, Any]] = [
    {"op": "topk", "tensor": MODEL_OUTPUT, "k": 3, "output": TOP, "labels": LABELS},
]


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def routes_toml(batching: str = "{ max_delay_ms = 2.0, max_batch = 64, eager = true }") -> str:
    """The two Switchyard routes of the pipeline, plain (``batching = false``) and micro-batched, as a routes file."""
    blocks = []
    for name, extra in ((ROUTE, "batching = false\n"), (BATCHED_ROUTE, f"batching = {batching}\n")):
        lines = [
            "[[routes]]",
            f'name = "{name}"',
            f'model = "{MODEL}"',
            extra.rstrip("\n"),
            "[[routes.inputs]]",
            f'name = "{INPUT}"',
            'datatype = "BYTES"',
            "shape = [-1]",
        ]
        for section, ops in (("pre", PRE_OPS), ("post", POST_OPS)):
            for op in ops:
                lines.append(f"[[routes.{section}]]")
                lines += [f"{key} = {_toml_value(value)}" for key, value in op.items()]
        blocks.append("\n".join(line for line in lines if line))
    return "# The image pipeline of benchmarks/peers (written by benchmarks.peers).\n\n" + "\n\n".join(blocks) + "\n"


class Pipeline:
    """The pre- and post-processing ops of ``PRE_OPS`` / ``POST_OPS``, run with NumPy."""

    def __init__(self) -> None:
        from switchyard.proxy.ops import build_op

        def build(section: str, specs: Sequence[dict[str, Any]]) -> list[Any]:
            return [
                build_op(spec["op"], {k: v for k, v in spec.items() if k != "op"}, f"{section}[{index}]")
                for index, spec in enumerate(specs)
            ]

        self.pre = build("pre", PRE_OPS)
        self.post = build("post", POST_OPS)

    def preprocess(self, images: Sequence[bytes]) -> npt.NDArray[np.float32]:
        """Encoded images -> the model's FP32 ``[n, 64]`` input."""
        arrays: dict[str, Any] = {INPUT: np.array(list(images), dtype=np.object_)}
        for op in self.pre:
            arrays = op.apply(arrays, np)
        return np.ascontiguousarray(arrays[MODEL_INPUT], dtype=np.float32)

    def postprocess(self, probabilities: npt.NDArray[np.float32]) -> dict[str, Any]:
        """The model's probabilities -> ``top_labels`` (bytes), ``top_indices``, ``top_scores``."""
        arrays: dict[str, Any] = {MODEL_OUTPUT: probabilities}
        for op in self.post:
            arrays = op.apply(arrays, np)
        return {name: arrays[name] for name in OUTPUTS}

    def answer(self, probabilities: npt.NDArray[np.float32]) -> dict[str, list[Any]]:
        """The JSON answer of the HTTP peers for one image: the three best labels, indices and scores."""
        top = self.postprocess(probabilities)
        return {
            "labels": [label.decode() for label in top[f"{TOP}_labels"][0]],
            "indices": [int(index) for index in top[f"{TOP}_indices"][0]],
            "scores": [float(score) for score in top[f"{TOP}_scores"][0]],
        }


class TritonPipeline:
    """Pre-processing, ``digits_logreg`` on Triton through ``tritonclient.grpc.aio``, post-processing.

    What a hand-written service does (the FastAPI and Ray Serve peers). Create it
    inside the running event loop: it holds one gRPC client for the process.
    """

    def __init__(self, triton_url: str) -> None:
        import tritonclient.grpc.aio as triton_aio

        self.pipeline = Pipeline()
        self._aio = triton_aio
        self.client = triton_aio.InferenceServerClient(triton_url)
        self._outputs = [triton_aio.InferRequestedOutput(MODEL_OUTPUT)]

    async def classify(self, image: bytes) -> dict[str, list[Any]]:
        pixels = self.pipeline.preprocess([image])
        tensor = self._aio.InferInput(MODEL_INPUT, list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        result = await self.client.infer(MODEL, [tensor], outputs=self._outputs, client_timeout=30.0)
        return self.pipeline.answer(result.as_numpy(MODEL_OUTPUT))

    async def close(self) -> None:
        await self.client.close()
