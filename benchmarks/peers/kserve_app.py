"""Peer (a): the image pipeline as a KServe transformer in front of Triton (the ``kserve`` Python package).

Usage (in the peers' environment, see ``benchmarks.peers``)::

    python -m benchmarks.peers.kserve_app --model_name digits_pipeline --http_port 8080 --grpc_port 8081 \\
        --predictor_host 127.0.0.1:8001 --predictor_protocol grpc-v2 --workers 1

KServe's transformer pattern: a ``kserve.Model`` whose ``preprocess`` turns
the v2 request (input ``png``: BYTES ``[1]``) into the predictor's request
with the shared pre-processing code of ``pipeline.py``, whose ``predict`` is
KServe's own (its gRPC client to the predictor host, here Triton's gRPC port,
model ``digits_logreg``), and whose ``postprocess`` applies the shared
top-k. Clients call its Open Inference Protocol gRPC port (``--grpc_port``;
ModelInfer on model ``--model_name``) and get ``top_labels``,
``top_indices`` and ``top_scores``. All other options are KServe's model
server's own. Prints ``serving on 127.0.0.1:GRPC_PORT`` just before the
model server starts (its ports open right after).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server

from benchmarks.peers.pipeline import INPUT, MODEL, MODEL_INPUT, MODEL_OUTPUT, Pipeline


class PipelineTransformer(Model):
    """Pre-processing before, and top-k after, KServe's call to the predictor (Triton)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.pipeline = Pipeline()
        self.ready = True

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> InferRequest:
        if not isinstance(payload, InferRequest):
            raise TypeError("this transformer speaks the v2 protocol only")
        (tensor,) = [t for t in payload.inputs if t.name == INPUT]
        images = [bytes(item) for item in tensor.as_numpy().reshape(-1)]
        pixels = self.pipeline.preprocess(images)
        model_input = InferInput(MODEL_INPUT, list(pixels.shape), "FP32")
        model_input.set_data_from_numpy(pixels, binary_data=True)
        return InferRequest(model_name=MODEL, infer_inputs=[model_input], request_id=payload.id)

    def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> InferResponse:
        (output,) = [o for o in result.outputs if o.name == MODEL_OUTPUT]
        top = self.pipeline.postprocess(output.as_numpy())
        outputs = []
        for name, array in top.items():
            datatype = "BYTES" if array.dtype == np.object_ else "INT64" if array.dtype == np.int64 else "FP32"
            tensor = InferOutput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=False)
            outputs.append(tensor)
        return InferResponse(response_id=result.id, model_name=self.name, infer_outputs=outputs)


def main() -> int:
    # kserve.model_server parses sys.argv when imported: its parser holds every option.
    args, _ = model_server.parser.parse_known_args()
    transformer = PipelineTransformer(args.model_name)
    print(f"serving on 127.0.0.1:{args.grpc_port}", flush=True)
    ModelServer().start([transformer])
    return 0


if __name__ == "__main__":
    sys.exit(main())
