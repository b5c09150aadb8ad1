"""A user's ONNX model as a Triton model folder: what ``switchyard models add`` writes.

This module owns the reading of an ONNX graph's inputs and outputs (names,
element types, shapes, the batch dimension), the refusal of graphs the
onnxruntime runner cannot serve as they are (each refusal names the tensor or
the option), and the writing of the folder in the same form as the bundled
models (``build.model_config`` and ``build.write_version``: ``config.pbtxt``
with dynamic batching, instance groups and a version policy; ``N/model.onnx``
beside the shared runner as ``N/model.py``). Adding a version beside existing
ones checks that its graph fits the model's one ``config.pbtxt``.

What the graph cannot say comes from :class:`AddOptions`: rows per batch
(0: the model does not batch), instances, the queue delay, the version
policy, the size of a dynamic dimension (``shapes``), and the dimensions
clients see when they differ from the model's own (``reshapes``, Triton's
``reshape``). It does not load anything into Triton, nor write routes.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf import text_format
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2

from switchyard.models.build import TRITON_TYPES, Serving, TensorSpec, model_config, write_version

DEFAULT_MAX_BATCH = 64
DEFAULT_INSTANCES = 1
DEFAULT_DELAY_US = 1000
DEFAULT_VERSION_POLICY = "all"
"""Every version in the folder is served, so routes pinned to an older one keep working when a new one arrives."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
"""Model names: what Triton accepts as a folder and the routes file as a model name."""

_ONNX_TO_NUMPY: dict[int, str] = {
    TensorProto.BOOL: "bool",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.FLOAT16: "float16",
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
}
SUPPORTED_TYPES = ", ".join(TensorProto.DataType.Name(t) for t in _ONNX_TO_NUMPY)


class ModelAddError(ValueError):
    """The graph or an option cannot make a servable model; the message names the tensor or the option."""


@dataclass(frozen=True)
class GraphTensor:
    """An input or output as the ONNX graph declares it."""

    name: str
    role: str
    """``input`` or ``output``."""
    kind: str
    """``tensor``, or what else the graph says it is (``sequence``, ``map``, ...)."""
    elem_type: int = TensorProto.UNDEFINED
    dims: tuple[int | None, ...] | None = None
    """Dimensions (None: dynamic); None: the graph gives no shape at all."""

    def describe(self) -> str:
        return f"{self.role} {self.name!r}"

    def shape_text(self) -> str:
        if self.dims is None:
            return "unknown"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


@dataclass(frozen=True)
class AddOptions:
    """What ``models add`` takes besides the graph."""

    name: str
    max_batch_size: int | None = None
    """None: ``DEFAULT_MAX_BATCH`` for a new model, the config's for a new version."""
    instances: int | None = None
    delay_us: int | None = None
    version: str | None = None
    """A positive number, or ``next``; None: 1 for a new model (an existing one needs a version given)."""
    version_policy: str | None = None
    """``all``, ``latest`` or ``latest:N``, ``specific:1,2``; None: ``DEFAULT_VERSION_POLICY`` (new model)."""
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Per-row dimensions (the batch excluded) of tensors whose graph leaves some dynamic or unknown; -1 keeps
    a dimension variable."""
    reshapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Per-row dimensions clients see for a tensor, when they differ from the model's own (same element count)."""


@dataclass(frozen=True)
class AddedModel:
    """What ``add_model`` wrote."""

    name: str
    folder: Path
    version: str
    versions: tuple[str, ...]
    """Every version folder of the model afterwards."""
    new_model: bool
    config_changed: bool
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def client_shape(self, spec: TensorSpec) -> list[int]:
        """The shape clients send or get (Triton's metadata): -1 first when the model batches."""
        return ([-1] if self.max_batch_size > 0 else []) + list(spec.dims)


def datatype(spec: TensorSpec) -> str:
    """The wire datatype (``FP32``, ``INT64``, ...) of a tensor spec."""
    return TRITON_TYPES[spec.dtype].removeprefix("TYPE_")


# -- options -----------------------------------------------------------------------


def parse_dims(text: str, option: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=4,3`` (or ``NAME=4x3``; ``NAME=`` for no dimensions) as (name, dims)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ModelAddError(f"{option} {text!r}: expected TENSOR=DIMS, e.g. {option} features=4 or image=3,32,32")
    dims: list[int] = []
    for part in re.split(r"[,x]", value.strip()) if value.strip() else []:
        try:
            dim = int(part)
        except ValueError:
            raise ModelAddError(f"{option} {text!r}: {part!r} is not a dimension (a positive number or -1)") from None
        if dim == 0 or dim < -1:
            raise ModelAddError(f"{option} {text!r}: dimensions are positive numbers or -1 (variable), not {dim}")
        dims.append(dim)
    return name, tuple(dims)


def version_policy_body(policy: str) -> str:
    """The ``version_policy`` body for ``all``, ``latest[:N]`` or ``specific:1,2``."""
    kind, _, arg = policy.partition(":")
    if kind == "all" and not arg:
        return "all: { }"
    if kind == "latest":
        count = arg or "1"
        if not count.isdigit() or int(count) < 1:
            raise ModelAddError(f"--version-policy {policy!r}: latest:N needs N >= 1")
        return f"latest: {{ num_versions: {int(count)} }}"
    if kind == "specific":
        versions = [v for v in arg.split(",") if v]
        if not versions or not all(v.isdigit() and int(v) > 0 for v in versions):
            raise ModelAddError(f"--version-policy {policy!r}: specific:N,M needs version numbers, e.g. specific:1,2")
        return f"specific: {{ versions: [{', '.join(str(int(v)) for v in versions)}] }}"
    raise ModelAddError(f"--version-policy {policy!r}: expected all, latest, latest:N or specific:N,M")


def _check_options(options: AddOptions) -> None:
    if not NAME_PATTERN.match(options.name):
        raise ModelAddError(
            f"--name {options.name!r}: a model name uses letters, digits and _ . - (not starting with . or -)"
        )
    if options.max_batch_size is not None and options.max_batch_size < 0:
        raise ModelAddError(f"--max-batch {options.max_batch_size}: must be >= 0 (0: the model does not batch)")
    if options.instances is not None and options.instances < 1:
        raise ModelAddError(f"--instances {options.instances}: must be >= 1")
    if options.delay_us is not None and options.delay_us < 0:
        raise ModelAddError(f"--delay-us {options.delay_us}: must be >= 0")
    if options.version not in (None, "next") and not (options.version.isdigit() and int(options.version) > 0):
        raise ModelAddError(f"--version {options.version!r}: expected a positive number or 'next'")
    if options.version_policy is not None:
        version_policy_body(options.version_policy)


# -- the graph -----------------------------------------------------------------------


def read_graph(path: Path) -> tuple[onnx.ModelProto, list[GraphTensor], list[GraphTensor]]:
    """The model, and its graph's inputs (initializers left out) and outputs."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ModelAddError(f"{path}: no such file") from None
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
        raise ModelAddError(f"{path}: not an ONNX model ({exc})") from None
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelAddError(f"{path}: the weights are in external data files; save the model as one file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelAddError(f"{path}: not a valid ONNX model: {first}") from None
    weights = {t.name for t in model.graph.initializer}
    inputs = [_tensor(v, "input") for v in model.graph.input if v.name not in weights]
    outputs = [_tensor(v, "output") for v in model.graph.output]
    if not inputs:
        raise ModelAddError(f"{path}: the graph has no inputs")
    return model, inputs, outputs


def _tensor(value: onnx.ValueInfoProto, role: str) -> GraphTensor:
    which = value.type.WhichOneof("value")
    if which != "tensor_type":
        kind = (which or "undefined").removesuffix("_type")
        return GraphTensor(value.name, role, kind)
    tensor = value.type.tensor_type
    dims: tuple[int | None, ...] | None = None
    if tensor.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
    return GraphTensor(value.name, role, "tensor", tensor.elem_type, dims)


def config_tensor(tensor: GraphTensor, *, batched: bool, options: AddOptions) -> TensorSpec:
    """How the model's ``config.pbtxt`` declares ``tensor``; ModelAddError names it when it cannot be served."""
    what = tensor.describe()
    if tensor.kind != "tensor":
        hint = (
            " (a scikit-learn classifier exported with skl2onnx gives its probabilities as a sequence of maps "
            "unless converted with options={id(classifier): {'zipmap': False}})"
            if tensor.kind in ("sequence", "map")
            else ""
        )
        raise ModelAddError(f"{what} is a {tensor.kind}, not a tensor: the runner serves tensors only{hint}")
    dtype = _ONNX_TO_NUMPY.get(tensor.elem_type)
    if dtype is None:
        name = TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type in TensorProto.DataType.values() else ""
        raise ModelAddError(
            f"{what} has element type {name or tensor.elem_type}, which the runner does not serve "
            f"(supported: {SUPPORTED_TYPES})"
        )
    given = options.shapes.get(tensor.name)
    dims = tensor.dims
    if dims is None:
        if given is None:
            raise ModelAddError(
                f"{what}: the graph gives no shape; give its dimensions per row with --shape {tensor.name}=..."
            )
        row = given
    else:
        if batched:
            if not dims:
                raise ModelAddError(
                    f"{what} is a scalar: it has no batch dimension; serve the model unbatched with --max-batch 0"
                )
            if dims[0] is not None:
                raise ModelAddError(
                    f"{what} has shape {tensor.shape_text()}: its first dimension is fixed ({dims[0]}), so it has "
                    "no batch dimension; export the model with a dynamic first axis, or serve it unbatched "
                    "with --max-batch 0"
                )
            dims = dims[1:]
        row = _given_dims(tensor, dims, given) if given is not None else _fixed_dims(tensor, dims, batched)
    reshape = options.reshapes.get(tensor.name)
    if reshape is not None:
        if -1 not in row and -1 not in reshape and math.prod(reshape) != math.prod(row):
            raise ModelAddError(
                f"--reshape {tensor.name}={','.join(map(str, reshape))}: {math.prod(reshape)} elements per row, "
                f"but the model's {tensor.role} has {math.prod(row)} ({list(row)})"
            )
        if not reshape:
            raise ModelAddError(f"--reshape {tensor.name}=: Triton needs at least one dimension for clients")
        return TensorSpec(tensor.name, dtype, tuple(reshape), reshape=tuple(row))
    if not row:
        # Triton needs non-empty dims: one value per row is declared [1] and reshaped to [] (the model's own).
        return TensorSpec(tensor.name, dtype, (1,), reshape=())
    return TensorSpec(tensor.name, dtype, tuple(row))


def _given_dims(tensor: GraphTensor, dims: tuple[int | None, ...], given: tuple[int, ...]) -> tuple[int, ...]:
    if len(given) != len(dims):
        raise ModelAddError(
            f"--shape {tensor.name}={','.join(map(str, given))}: {len(given)} dimensions, but the graph's "
            f"{tensor.role} has {len(dims)} per row ({tensor.shape_text()})"
        )
    for index, (graph_dim, dim) in enumerate(zip(dims, given, strict=True)):
        if graph_dim is not None and dim != graph_dim:
            raise ModelAddError(
                f"--shape {tensor.name}={','.join(map(str, given))}: dimension {index} is {graph_dim} in the "
                f"graph ({tensor.shape_text()})"
            )
    return given


def _fixed_dims(tensor: GraphTensor, dims: tuple[int | None, ...], batched: bool) -> tuple[int, ...]:
    for index, dim in enumerate(dims):
        if dim is None:
            position = index + 1 if batched else index
            raise ModelAddError(
                f"{tensor.describe()} has shape {tensor.shape_text()}: dimension {position} is dynamic and not the "
                f"batch; give the per-row dimensions with --shape {tensor.name}=... (-1 keeps one variable)"
            )
    return tuple(d for d in dims if d is not None)


# -- the repository ------------------------------------------------------------------


def versions_of(folder: Path) -> list[int]:
    """The version folders of a model (numbers), in order."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    """A model folder's ``config.pbtxt``."""
    path = folder / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except OSError as exc:
        raise ModelAddError(f"{path}: cannot read it ({exc.strerror})") from None
    except text_format.ParseError as exc:
        raise ModelAddError(f"{path}: not a valid Triton config ({exc})") from None


def _declared(config: model_config_pb2.ModelConfig, role: str) -> dict[str, tuple[str, tuple[int, ...], object]]:
    tensors = config.input if role == "input" else config.output
    return {
        t.name: (
            model_config_pb2.DataType.Name(t.data_type),
            tuple(t.dims),
            tuple(t.reshape.shape) if t.HasField("reshape") else None,
        )
        for t in tensors
    }


def _check_fits(
    name: str,
    version: str,
    config: model_config_pb2.ModelConfig,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> None:
    """A new version's tensors must be the model's: one config.pbtxt serves every version."""
    for role, specs in (("input", inputs), ("output", outputs)):
        declared = _declared(config, role)
        mine = {s.name: (TRITON_TYPES[s.dtype], s.dims, s.reshape) for s in specs}
        for tensor in sorted(set(declared) | set(mine)):
            if declared.get(tensor) == mine.get(tensor):
                continue
            if tensor not in declared:
                problem = f"{role} {tensor!r} is not in the model's config.pbtxt"
            elif tensor not in mine:
                problem = f"the graph lacks {role} {tensor!r} of the model's config.pbtxt"
            else:
                have, want = mine[tensor], declared[tensor]
                problem = (
                    f"{role} {tensor!r} is {have[0]} {list(have[1])} here, {want[0]} {list(want[1])} in config.pbtxt"
                )
            raise ModelAddError(
                f"version {version} does not fit model {name!r}: {problem} (a model's versions share one config; "
                "add this graph under another --name)"
            )


def add_model(onnx_path: Path, repository: Path, options: AddOptions) -> AddedModel:
    """Writes the ONNX model as a Triton model folder (or a new version of one) into ``repository``.

    Raises ModelAddError, naming the tensor or the option, before writing anything.
    """
    _check_options(options)
    folder = repository / options.name
    existing = versions_of(folder)
    new_model = not (folder / "config.pbtxt").is_file()
    config = None if new_model else read_config(folder)
    if config is not None and options.max_batch_size is not None and options.max_batch_size != config.max_batch_size:
        raise ModelAddError(
            f"--max-batch {options.max_batch_size}: model {options.name!r} has max_batch_size "
            f"{config.max_batch_size} for every version; leave --max-batch out, or add under another --name"
        )
    if not new_model and options.version is None:
        raise ModelAddError(
            f"--name {options.name!r}: the model already exists in {repository} (versions "
            f"{', '.join(map(str, existing)) or 'none'}); add a version with --version next, or choose another --name"
        )
    if options.version in (None, "next"):
        version = str(max(existing, default=0) + 1)
    else:
        version = str(int(options.version))
    if int(version) in existing:
        raise ModelAddError(f"--version {version}: model {options.name!r} already has version {version}")
    model, graph_inputs, graph_outputs = read_graph(onnx_path)
    if config is not None:
        max_batch = int(config.max_batch_size)
    else:
        max_batch = DEFAULT_MAX_BATCH if options.max_batch_size is None else options.max_batch_size
    known = {t.name for t in graph_inputs} | {t.name for t in graph_outputs}
    for option, names in (("--shape", options.shapes), ("--reshape", options.reshapes)):
        for tensor in names:
            if tensor not in known:
                raise ModelAddError(
                    f"{option} {tensor}: the model has no tensor {tensor!r} "
                    f"(inputs: {', '.join(t.name for t in graph_inputs)}; "
                    f"outputs: {', '.join(t.name for t in graph_outputs)})"
                )
    inputs = tuple(config_tensor(t, batched=max_batch > 0, options=options) for t in graph_inputs)
    outputs = tuple(config_tensor(t, batched=max_batch > 0, options=options) for t in graph_outputs)
    config_text: str | None = None
    if config is None:
        serving = Serving(
            max_batch_size=max_batch,
            preferred_batch_sizes=(),
            max_queue_delay_us=DEFAULT_DELAY_US if options.delay_us is None else options.delay_us,
            instance_count=DEFAULT_INSTANCES if options.instances is None else options.instances,
            version_policy=version_policy_body(options.version_policy or DEFAULT_VERSION_POLICY),
        )
        config_text = model_config(options.name, inputs, outputs, serving)
    else:
        _check_fits(options.name, version, config, inputs, outputs)
        config_text = _updated_config(config, options)
    _write(repository, folder, version, model.SerializeToString(), config_text, new_model)
    return AddedModel(
        name=options.name,
        folder=folder,
        version=version,
        versions=tuple(str(v) for v in versions_of(folder)),
        new_model=new_model,
        config_changed=config_text is not None,
        max_batch_size=max_batch,
        inputs=inputs,
        outputs=outputs,
    )


def _updated_config(config: model_config_pb2.ModelConfig, options: AddOptions) -> str | None:
    """The config with the options given for an existing model applied, or None when none changes it."""
    changed = model_config_pb2.ModelConfig()
    changed.CopyFrom(config)
    if options.instances is not None:
        if not changed.instance_group:
            changed.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
        for group in changed.instance_group:
            group.count = options.instances
    if options.delay_us is not None and changed.max_batch_size > 0:
        changed.dynamic_batching.max_queue_delay_microseconds = options.delay_us
    if options.version_policy is not None:
        policy = model_config_pb2.ModelVersionPolicy()
        text_format.Parse(version_policy_body(options.version_policy), policy)
        changed.version_policy.CopyFrom(policy)
    if changed == config:
        return None
    return text_format.MessageToString(changed)


def _write(
    repository: Path, folder: Path, version: str, onnx_bytes: bytes, config_text: str | None, new_model: bool
) -> None:
    """Writes the version (and config) beside the final place, then moves it in, so Triton never sees half."""
    repository.mkdir(parents=True, exist_ok=True)
    if new_model:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=repository))
        try:
            write_version(staging, version, onnx_bytes)
            assert config_text is not None
            (staging / "config.pbtxt").write_text(config_text, encoding="utf-8")
            if folder.exists():  # a folder without config.pbtxt: keep what was there
                for entry in staging.iterdir():
                    entry.rename(folder / entry.name)
            else:
                staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder))
    try:
        write_version(staging, version, onnx_bytes)
        (staging / version).rename(folder / version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if config_text is not None:
        (folder / ".config.pbtxt.new").write_text(config_text, encoding="utf-8")
        (folder / ".config.pbtxt.new").replace(folder / "config.pbtxt")
