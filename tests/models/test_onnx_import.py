"""``switchyard models add``: an ONNX graph written as a Triton model folder, versions, and each refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import text_format
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2

from switchyard.models.onnx_import import AddOptions, ModelAddError, add_model
from switchyard.server.cli import main as server_main

from .onnx_graphs import iris_pipeline, one_input, sequence_output, two_inputs


def _config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_a_two_input_graph_becomes_a_batched_model_folder(tmp_path: Path) -> None:
    onnx_file = two_inputs(tmp_path / "pair.onnx")
    added = add_model(
        onnx_file, tmp_path / "repo", AddOptions(name="pair", instances=2, delay_us=250, max_batch_size=16)
    )
    folder = tmp_path / "repo" / "pair"
    config = _config(folder)
    assert (added.version, added.new_model) == ("1", True)
    assert config.max_batch_size == 16
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [g.count for g in config.instance_group] == [2]
    assert config.version_policy.HasField("all")
    assert [(t.name, list(t.dims)) for t in config.input] == [("a", [3]), ("b", [3])]
    assert [t.name for t in config.output] == ["total", "product"]
    assert (folder / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert (folder / "1" / "model.py").is_file()


def test_a_scikit_learn_pipeline_scalar_label_is_reshaped(tmp_path: Path) -> None:
    added = add_model(iris_pipeline(tmp_path / "iris.onnx"), tmp_path / "repo", AddOptions(name="iris"))
    label = next(t for t in _config(added.folder).output if t.name == "label")
    assert (list(label.dims), list(label.reshape.shape)) == ([1], [])
    assert added.client_shape(added.inputs[0]) == [-1, 4]


def test_versions_are_added_beside_and_numbered_next(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_model(two_inputs(tmp_path / "v1.onnx"), repo, AddOptions(name="pair"))
    second = add_model(two_inputs(tmp_path / "v2.onnx", scale=2.0), repo, AddOptions(name="pair", version="next"))
    fifth = add_model(
        two_inputs(tmp_path / "v5.onnx", scale=5.0),
        repo,
        AddOptions(name="pair", version="5", version_policy="latest:2"),
    )
    assert (second.version, fifth.version, fifth.versions) == ("2", "5", ("1", "2", "5"))
    assert _config(repo / "pair").version_policy.latest.num_versions == 2


def test_the_command_prints_a_route_and_appends_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_file = two_inputs(tmp_path / "pair.onnx")
    routes = tmp_path / "routes.toml"
    routes.write_text("# my routes\n")
    status = server_main(
        [
            "models",
            "add",
            str(onnx_file),
            "--name",
            "pair",
            "--repository",
            str(tmp_path / "r"),
            "--route-file",
            str(routes),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "added model pair version 1" in out and "input a: FP32 [-1, 3]" in out
    from switchyard.proxy.routes.schema import load_routes

    (route,) = load_routes(routes).routes
    assert route.name == "pair" and route.models() == ["pair"]
    assert [(i.name, i.datatype, i.shape) for i in route.inputs or []] == [
        ("a", "FP32", [-1, 3]),
        ("b", "FP32", [-1, 3]),
    ]


Make = Callable[[Path], Path]

REFUSALS: list[tuple[str, Make, dict[str, object], str]] = [
    (
        "fixed first dim",
        lambda p: two_inputs(p, batch=2),
        {},
        "input 'a' has shape [2, 3]: its first dimension is fixed",
    ),
    (
        "dynamic inner dim",
        lambda p: two_inputs(p, width="W"),
        {},
        "input 'a' has shape [?, ?]: dimension 1 is dynamic and not the batch; give the per-row dimensions with "
        "--shape a=",
    ),
    ("string input", lambda p: one_input(p, TensorProto.STRING, ["N", 2]), {}, "input 'x' has element type STRING"),
    (
        "complex input",
        lambda p: one_input(p, TensorProto.COMPLEX64, ["N", 2]),
        {},
        "input 'x' has element type COMPLEX64",
    ),
    ("sequence output", sequence_output, {}, "output 'seq' is a sequence, not a tensor"),
    ("scalar when batching", lambda p: one_input(p, TensorProto.FLOAT, []), {}, "input 'x' is a scalar"),
    ("bad name", two_inputs, {"name": "../up"}, "--name '../up'"),
    ("negative max batch", two_inputs, {"max_batch_size": -1}, "--max-batch -1: must be >= 0"),
    ("no instances", two_inputs, {"instances": 0}, "--instances 0: must be >= 1"),
    ("bad version", two_inputs, {"version": "v2"}, "--version 'v2': expected a positive number or 'next'"),
    ("bad policy", two_inputs, {"version_policy": "newest"}, "--version-policy 'newest'"),
    ("shape of no tensor", two_inputs, {"shapes": {"c": (3,)}}, "--shape c: the model has no tensor 'c'"),
    ("reshape of wrong size", two_inputs, {"reshapes": {"a": (2, 2)}}, "--reshape a=2,2: 4 elements per row"),
    ("shape against the graph", two_inputs, {"shapes": {"a": (4,)}}, "--shape a=4: dimension 0 is 3 in the graph"),
]


@pytest.mark.parametrize(("make", "options", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_tensor_or_option(
    tmp_path: Path, make: Make, options: dict[str, object], message: str
) -> None:
    kwargs: dict[str, object] = {"name": "m", **options}
    with pytest.raises(ModelAddError) as info:
        add_model(make(tmp_path / "model.onnx"), tmp_path / "repo", AddOptions(**kwargs))  # type: ignore[arg-type]
    assert message in str(info.value)
    assert not (tmp_path / "repo" / "m").exists()


def test_an_existing_model_needs_a_version_and_a_fitting_graph(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_model(two_inputs(tmp_path / "v1.onnx"), repo, AddOptions(name="pair"))
    with pytest.raises(ModelAddError, match="already exists .* --version next"):
        add_model(two_inputs(tmp_path / "again.onnx"), repo, AddOptions(name="pair"))
    with pytest.raises(ModelAddError, match="version 2 does not fit model 'pair': input 'a' is TYPE_FP32 \\[4\\] here"):
        add_model(two_inputs(tmp_path / "wide.onnx", width=4), repo, AddOptions(name="pair", version="next"))
    with pytest.raises(ModelAddError, match="--version 1: model 'pair' already has version 1"):
        add_model(two_inputs(tmp_path / "v1b.onnx"), repo, AddOptions(name="pair", version="1"))
    assert sorted(p.name for p in (repo / "pair").iterdir() if not p.name.startswith(".")) == ["1", "config.pbtxt"]


def test_the_command_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = two_inputs(tmp_path / "fixed.onnx", batch=2)
    assert server_main(["models", "add", str(bad), "--name", "m", "--repository", str(tmp_path / "r")]) == 2
    assert "input 'a' has shape [2, 3]" in capsys.readouterr().err


def test_a_dynamic_inner_dimension_takes_the_given_shape(tmp_path: Path) -> None:
    onnx_file = two_inputs(tmp_path / "wide.onnx", width="W")
    shapes = {"a": (3,), "b": (3,), "total": (-1,), "product": (-1,)}
    added = add_model(onnx_file, tmp_path / "repo", AddOptions(name="wide", shapes=shapes))
    assert [(t.name, list(t.dims)) for t in _config(added.folder).input] == [("a", [3]), ("b", [3])]
    assert [(t.name, list(t.dims)) for t in _config(added.folder).output] == [("total", [-1]), ("product", [-1])]
