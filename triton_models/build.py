"""Build the Triton model repository of the bundled models.

Usage: ``python -m switchyard.models.build [--out DIR]``.

This module owns what each bundled model is: its training data and estimator
(or, for ``image_cnn``, the generated network of ``cnn.py``), its ONNX export
(tensor names, opset, fixed metadata) and its ``config.pbtxt`` (shapes,
dtypes, dynamic batching, instance groups). Every model is served by the same
Python-backend runner, ``onnx_runner.py``, copied as ``1/model.py``.

``model_config`` and ``write_version`` are how any ONNX model becomes a
Triton model folder of that form; ``switchyard models add``
(``switchyard.models.onnx_import``) writes users' models with them too.

The build is reproducible: fixed splits and seeds, a fixed target opset and
fixed ONNX graph names, so two builds give byte-identical files. Built
repositories are outputs, never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import ModelProto
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from switchyard.models import cnn
from switchyard.models.datasets import DIGITS_SIDE, Float32Array, Int64Array, digits_split, wine_split

DEFAULT_OUT = Path(__file__).resolve().parent / "repository"
"""Where ``python -m switchyard.models.build`` writes when ``--out`` is not given (git-ignored)."""

RUNNER = Path(__file__).resolve().parent / "onnx_runner.py"
"""The generic Python-backend model copied as every model's ``1/model.py``."""

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
"""Upper bound of the opsets skl2onnx may use; skl2onnx then picks the lowest that suffices."""

MAX_BATCH_SIZE = 64
PREFERRED_BATCH_SIZES = (8, 16, 32, 64)
MAX_QUEUE_DELAY_US = 2000
INSTANCE_COUNT = 2
VERSION = "1"
SEED = 0

DIGITS_MLP_HIDDEN = (1024, 1024)
"""Hidden layers of ``digits_mlp``: wide enough to be several times slower than ``digits_logreg`` per request."""

DIGITS_MLP_EPOCHS = 8
"""Fixed number of passes over the (shifted) training images; ``digits_mlp`` stops there, converged or not."""

DIGITS_MLP_BATCH = 500

WINE_CULTIVARS = 3
"""Classes of ``wine_classifier``; one ``wine_alcohol_c<k>`` regressor per class."""

_TOOLCHAIN = ("numpy", "scikit-learn", "skl2onnx", "onnx")
"""Packages whose versions can change the exported bytes."""

TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
"""NumPy dtype name -> Triton config data type, for every type the onnxruntime runner serves."""


def _pbtxt_list(values: Sequence[int]) -> str:
    return f"[ {', '.join(str(v) for v in values)} ]" if values else "[ ]"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the client sees it.

    ``dims`` excludes the batch dimension. ``reshape`` is the per-row shape the
    backend produces when it differs from ``dims`` (``()`` for a 1-D batched output).
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None

    def onnx_type(self) -> FloatTensorType | Int64TensorType:
        shape: list[int | None] = [None, *(self.reshape if self.reshape is not None else self.dims)]
        if self.dtype == "float32":
            return FloatTensorType(shape)
        if self.dtype == "int64":
            return Int64TensorType(shape)
        raise ValueError(f"unsupported dtype {self.dtype!r}")

    def pbtxt(self) -> str:
        lines = [
            f'    name: "{self.name}"',
            f"    data_type: {TRITON_TYPES[self.dtype]}",
            f"    dims: {_pbtxt_list(self.dims)}",
        ]
        if self.reshape is not None:
            lines.append(f"    reshape: {{ shape: {_pbtxt_list(self.reshape)} }}")
        return "  {\n" + "\n".join(lines) + "\n  }"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and its scores on the held-out split."""

    estimator: Pipeline
    metrics: dict[str, float]


@dataclass(frozen=True)
class ModelSpec:
    """A bundled model: name, client-visible tensors and how to make it.

    Exactly one of ``train`` (a scikit-learn pipeline, exported with skl2onnx) and
    ``generate`` (an ONNX model built directly, with generated weights) is set.
    """

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    train: Callable[[], TrainedModel] | None = None
    classifier: bool = False
    generate: Callable[[ModelSpec], ModelProto] | None = None

    def __post_init__(self) -> None:
        if (self.train is None) == (self.generate is None):
            raise ValueError(f"model {self.name!r}: set exactly one of train and generate")


def _train_digits_logreg() -> TrainedModel:
    split = digits_split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    model.fit(split.X_train, split.y_train)
    return TrainedModel(model, {"accuracy": float(accuracy_score(split.y_test, model.predict(split.X_test)))})


def _train_wine_classifier() -> TrainedModel:
    split = wine_split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED))
    model.fit(split.X_train, split.y_train)
    return TrainedModel(model, {"accuracy": float(accuracy_score(split.y_test, model.predict(split.X_test)))})


def shifted_digits(X: Float32Array, y: Int64Array) -> tuple[Float32Array, Int64Array]:
    """Return the flattened 8x8 images followed by copies shifted one pixel down, up, right and left.

    Vacated pixels are 0 (background); ``y`` is repeated to match (5x the rows).
    """
    images = X.reshape(-1, DIGITS_SIDE, DIGITS_SIDE)
    copies = [images]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        shifted = np.roll(images, step, axis=axis)
        edge = 0 if step > 0 else DIGITS_SIDE - 1
        if axis == 1:
            shifted[:, edge, :] = 0
        else:
            shifted[:, :, edge] = 0
        copies.append(shifted)
    return np.concatenate(copies).reshape(-1, DIGITS_SIDE * DIGITS_SIDE), np.tile(y, len(copies))


def _train_digits_mlp() -> TrainedModel:
    split = digits_split()
    X_train, y_train = shifted_digits(split.X_train, split.y_train)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            DIGITS_MLP_HIDDEN,
            batch_size=DIGITS_MLP_BATCH,
            max_iter=DIGITS_MLP_EPOCHS,
            random_state=SEED,
        ),
    )
    # One BLAS thread: with more, the float sums (hence the exported bytes) depend on the core count.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the epoch budget is fixed on purpose
        model.fit(X_train, y_train)
    return TrainedModel(model, {"accuracy": float(accuracy_score(split.y_test, model.predict(split.X_test)))})


def _alcohol_regressor(X: Float32Array, alcohol: Float32Array) -> Pipeline:
    return make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(X, alcohol)


def _regression_metrics(alcohol: Float32Array, predicted: npt.NDArray[np.floating[Any]]) -> dict[str, float]:
    return {
        "r2": float(r2_score(alcohol, predicted)),
        "mae": float(np.mean(np.abs(alcohol - predicted))),
    }


def _train_wine_alcohol_regressor() -> TrainedModel:
    split = wine_split()
    model = _alcohol_regressor(split.X_train, split.alcohol_train)
    return TrainedModel(model, _regression_metrics(split.alcohol_test, model.predict(split.X_test)))


def _wine_alcohol_of_cultivar(cultivar: int) -> Callable[[], TrainedModel]:
    def train() -> TrainedModel:
        split = wine_split()
        train_rows, test_rows = split.y_train == cultivar, split.y_test == cultivar
        model = _alcohol_regressor(split.X_train[train_rows], split.alcohol_train[train_rows])
        # Scored on the held-out wines of this cultivar only (by their true class).
        predicted = model.predict(split.X_test[test_rows])
        return TrainedModel(model, _regression_metrics(split.alcohol_test[test_rows], predicted))

    train.__name__ = train.__qualname__ = f"_train_wine_alcohol_c{cultivar}"
    return train


def _generate_image_cnn(spec: ModelSpec) -> ModelProto:
    return cnn.cnn_model(spec.name, spec.description, seed=SEED)


# Triton requires non-empty dims, so a label with one value per row is declared
# [1] and reshaped to [] (the runner produces shape [batch]).
_LABEL = TensorSpec("label", "int64", (1,), reshape=())

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="digits_logreg",
        description="Handwritten digit (0-9) from 8x8 images: StandardScaler + LogisticRegression.",
        inputs=(TensorSpec("image", "float32", (64,)),),
        outputs=(_LABEL, TensorSpec("probabilities", "float32", (10,))),
        train=_train_digits_logreg,
        classifier=True,
    ),
    ModelSpec(
        name="digits_mlp",
        description=(
            "Handwritten digit (0-9) from 8x8 images, slower and more accurate than digits_logreg: "
            "StandardScaler + MLPClassifier (1024x1024 ReLU), trained on the images and their 1-pixel shifts."
        ),
        inputs=(TensorSpec("image", "float32", (64,)),),
        outputs=(_LABEL, TensorSpec("probabilities", "float32", (10,))),
        train=_train_digits_mlp,
        classifier=True,
    ),
    ModelSpec(
        name="wine_classifier",
        description="Wine cultivar (0-2) from 12 measurements: StandardScaler + LogisticRegression.",
        inputs=(TensorSpec("features", "float32", (12,)),),
        outputs=(_LABEL, TensorSpec("probabilities", "float32", (3,))),
        train=_train_wine_classifier,
        classifier=True,
    ),
    ModelSpec(
        name="wine_alcohol_regressor",
        description="Alcohol (% vol) from the same 12 wine measurements: StandardScaler + Ridge.",
        inputs=(TensorSpec("features", "float32", (12,)),),
        outputs=(TensorSpec("alcohol", "float32", (1,)),),
        train=_train_wine_alcohol_regressor,
    ),
    *(
        ModelSpec(
            name=f"wine_alcohol_c{cultivar}",
            description=(
                f"Alcohol (% vol) of a cultivar-{cultivar} wine from the same 12 measurements: StandardScaler + Ridge, "
                f"trained only on cultivar-{cultivar} wines (route by wine_classifier's label)."
            ),
            inputs=(TensorSpec("features", "float32", (12,)),),
            outputs=(TensorSpec("alcohol", "float32", (1,)),),
            train=_wine_alcohol_of_cultivar(cultivar),
        )
        for cultivar in range(WINE_CULTIVARS)
    ),
    ModelSpec(
        name="image_cnn",
        description=(
            "Compute-heavy stand-in image classifier (10 classes) from 3x224x224 images: four 3x3 convolutions "
            "with ReLU and max pooling, global average pooling, a dense layer and softmax. Generated weights "
            "(seeded He-normal), not trained: the answers are deterministic and meaningless."
        ),
        inputs=(TensorSpec("image", "float32", (cnn.IMAGE_CHANNELS, cnn.IMAGE_SIDE, cnn.IMAGE_SIDE)),),
        outputs=(TensorSpec("probabilities", "float32", (cnn.CLASSES,)),),
        generate=_generate_image_cnn,
    ),
)


def export_onnx(spec: ModelSpec, estimator: Pipeline) -> ModelProto:
    """Convert a fitted pipeline to ONNX with the spec's tensor names and fixed metadata."""
    options: dict[Any, dict[str, Any]] | None = None
    if spec.classifier:
        # zipmap=False: probabilities as a plain float tensor, not a list of dicts.
        options = {id(estimator.steps[-1][1]): {"zipmap": False}}
    onnx_model: ModelProto = convert_sklearn(
        estimator,
        name=spec.name,  # the default graph name is a random UUID
        initial_types=[(t.name, t.onnx_type()) for t in spec.inputs],
        final_types=[(t.name, t.onnx_type()) for t in spec.outputs],
        options=options,
        target_opset=TARGET_OPSET,
    )
    return _finish(spec, onnx_model)


def _finish(spec: ModelSpec, onnx_model: ModelProto) -> ModelProto:
    """Fixed opset order and metadata, and the spec's tensor names checked."""
    # skl2onnx collects the opsets in a set: put them in a fixed order, or the bytes vary with PYTHONHASHSEED.
    opsets = sorted((opset.domain, opset.version) for opset in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    onnx_model.doc_string = spec.description
    onnx_model.graph.doc_string = ""
    onnx_model.model_version = int(VERSION)
    _check_io(spec, onnx_model)
    return onnx_model


def _check_io(spec: ModelSpec, onnx_model: ModelProto) -> None:
    inputs = [i.name for i in onnx_model.graph.input]
    outputs = [o.name for o in onnx_model.graph.output]
    if inputs != [t.name for t in spec.inputs] or outputs != [t.name for t in spec.outputs]:
        raise RuntimeError(f"{spec.name}: exported inputs {inputs} / outputs {outputs} do not match the spec")


@dataclass(frozen=True)
class Serving:
    """How Triton serves a model: batching, instances and which versions are loaded."""

    max_batch_size: int = MAX_BATCH_SIZE
    """Rows per batch Triton may form; 0: the model does not batch (no batch dimension, no dynamic batching)."""
    preferred_batch_sizes: tuple[int, ...] = PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US
    """How long dynamic batching holds a request for others to join."""
    instance_count: int = INSTANCE_COUNT
    version_policy: str | None = None
    """The body of ``version_policy`` (``all: { }``, ``latest: { num_versions: 2 }``, ...); None: Triton's
    default, the latest version only."""


def model_config(
    name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], serving: Serving = Serving()
) -> str:
    """The ``config.pbtxt`` of a model served by the onnxruntime runner (``onnx_runner.py``)."""
    text = (
        f'name: "{name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {serving.max_batch_size}\n"
        "input [\n" + ",\n".join(t.pbtxt() for t in inputs) + "\n]\n"
        "output [\n" + ",\n".join(t.pbtxt() for t in outputs) + "\n]\n"
    )
    if serving.max_batch_size > 0:
        preferred = [size for size in serving.preferred_batch_sizes if size <= serving.max_batch_size]
        text += "dynamic_batching {\n"
        if preferred:
            text += f"  preferred_batch_size: {_pbtxt_list(preferred)}\n"
        text += f"  max_queue_delay_microseconds: {serving.max_queue_delay_us}\n}}\n"
    text += f"instance_group [\n  {{ count: {serving.instance_count}, kind: KIND_CPU }}\n]\n"
    if serving.version_policy is not None:
        text += f"version_policy: {{ {serving.version_policy} }}\n"
    return text


def render_config(spec: ModelSpec) -> str:
    """Return the bundled model's ``config.pbtxt``."""
    return model_config(spec.name, spec.inputs, spec.outputs)


def write_version(folder: Path, version: str, onnx_bytes: bytes) -> Path:
    """Writes version ``version`` of the model in ``folder``: the ONNX file and the runner that serves it."""
    target = folder / version
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(onnx_bytes)
    (target / "model.py").write_bytes(RUNNER.read_bytes())
    return target


def build_model(spec: ModelSpec, out: Path) -> dict[str, float]:
    """Train (or generate), export and write one model folder under ``out``; return its held-out metrics.

    A model with generated weights has no metrics (an empty dict).
    """
    if spec.generate is not None:
        onnx_model = _finish(spec, spec.generate(spec))
        metrics: dict[str, float] = {}
    else:
        assert spec.train is not None
        trained = spec.train()
        onnx_model = export_onnx(spec, trained.estimator)
        metrics = trained.metrics
    folder = out / spec.name
    if folder.exists():
        shutil.rmtree(folder)
    write_version(folder, VERSION, onnx_model.SerializeToString())
    (folder / "config.pbtxt").write_text(render_config(spec), encoding="utf-8")
    return metrics


def build_repository(out: Path, models: Sequence[ModelSpec] = MODELS, verbose: bool = False) -> Path:
    """Build every model into the repository folder ``out`` (created if needed) and return it.

    Model folders already in ``out`` are replaced; other entries are left alone.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in models:
        metrics = build_model(spec, out)
        if verbose:
            scores = ", ".join(f"{key}={value:.4f}" for key, value in metrics.items())
            print(f"{spec.name}: held-out {scores}" if metrics else f"{spec.name}: generated weights (not trained)")
    return out


def source_fingerprint() -> str:
    """Hex digest of everything that determines the built files: these sources and the toolchain versions.

    A repository built when the fingerprint was different is stale.
    """
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("build.py", "cnn.py", "datasets.py", "onnx_runner.py"):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    for package in _TOOLCHAIN:
        digest.update(f"{package}=={importlib.metadata.version(package)}\0".encode())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchyard.models.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"repository folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    out = build_repository(args.out, verbose=True)
    print(f"model repository written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
