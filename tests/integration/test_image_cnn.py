"""Triton serves the generated CNN (``image_cnn``): the right output shape, the same answers as onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tritongrpc

from switchyard.models import cnn
from switchyard.server.local_triton import LocalTriton


def test_triton_serves_image_cnn_like_onnxruntime(local_triton: LocalTriton, model_repository: Path) -> None:
    images = np.random.default_rng(0).random((2, 3, cnn.IMAGE_SIDE, cnn.IMAGE_SIDE), dtype=np.float32)
    client = tritongrpc.InferenceServerClient(local_triton.grpc_url)
    try:
        tensor = tritongrpc.InferInput("image", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        result = client.infer(
            "image_cnn", [tensor], outputs=[tritongrpc.InferRequestedOutput("probabilities")], client_timeout=60.0
        )
    finally:
        client.close()
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, cnn.CLASSES)
    session = ort.InferenceSession(
        str(model_repository / "image_cnn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(probabilities, session.run(None, {"image": images})[0], rtol=1e-4, atol=1e-6)
