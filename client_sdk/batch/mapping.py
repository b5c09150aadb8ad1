"""From table rows to a route's input tensors, and from its answers back to columns.

Owns :class:`RowMapping`: which columns feed which route input (a row of N
feature columns becomes one row of a ``[batch, N]`` tensor, or one list column
holds the N values), the conversion of an Arrow chunk into NumPy inputs with
the rows that cannot be sent (a null in an integer column, a list of the wrong
length) set aside with their error, and the output schema: the row id column,
one column per prediction value (``label``, ``probabilities_0`` ...) and
``error_code``/``error_message``, null on rows that succeeded. It does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ..results import RouteInfo, TensorSpec
from ..tensors import DATATYPES

ERROR_CODE = "error_code"
ERROR_MESSAGE = "error_message"
DEFAULT_ID_COLUMN = "row_id"

_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BYTES": pa.binary(),
}


@dataclass(frozen=True)
class RowError:
    """Why one row has no prediction: a gRPC status name and the message."""

    code: str
    message: str


@dataclass(frozen=True)
class OutputColumns:
    """One route output and the columns it fills: ``name`` for one value per row, ``name_i`` for several."""

    spec: TensorSpec
    width: int

    @property
    def columns(self) -> list[str]:
        if self.width == 1:
            return [self.spec.name]
        return [f"{self.spec.name}_{i}" for i in range(self.width)]

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.spec.datatype]


@dataclass(frozen=True)
class InputColumns:
    """One route input and the columns that feed it."""

    spec: TensorSpec
    columns: tuple[str, ...]
    row_shape: tuple[int, ...]

    @property
    def width(self) -> int:
        return math.prod(self.row_shape)


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk's inputs for the rows that can be sent, and the errors of the rows that cannot."""

    rows: npt.NDArray[np.int64]
    """Positions (within the chunk) of the rows in ``inputs``, in order."""
    inputs: dict[str, npt.NDArray[np.generic]]
    errors: dict[int, RowError]
    """Chunk position -> why that row could not be encoded."""


def _fixed_row_shape(spec: TensorSpec, what: str) -> tuple[int, ...]:
    if not spec.shape or spec.shape[0] != -1:
        raise ValueError(f"{what} {spec.name!r} has shape {list(spec.shape)}: batch scoring needs a batch dimension")
    dims = tuple(spec.shape[1:])
    if any(d < 0 for d in dims):
        raise ValueError(
            f"{what} {spec.name!r} has shape {list(spec.shape)}: batch scoring needs fixed dimensions after the batch"
        )
    return dims


class RowMapping:
    """How the rows of a table become requests to ``route`` and its answers become columns.

    ``inputs`` maps route input name -> column names (in order); when omitted,
    a route with one input takes ``columns`` (default: every column but the id
    column, in table order). ``outputs`` selects route outputs (default: all).
    ``id_column`` names the column kept as row id (None: the row's position,
    written as ``row_id``).
    """

    def __init__(
        self,
        route: RouteInfo,
        schema: pa.Schema,
        *,
        columns: Sequence[str] | None = None,
        inputs: Mapping[str, Sequence[str]] | None = None,
        outputs: Sequence[str] | None = None,
        id_column: str | None = None,
    ) -> None:
        self.route = route.name
        self.max_batch_size = route.max_batch_size
        """Most rows one request may carry (0: no limit known)."""
        if id_column is not None and id_column not in schema.names:
            raise ValueError(f"id column {id_column!r} is not in the input columns {schema.names}")
        self.id_column = id_column
        self.id_name = id_column or DEFAULT_ID_COLUMN
        self.id_type: pa.DataType = schema.field(id_column).type if id_column else pa.int64()
        if inputs is None:
            if len(route.inputs) != 1:
                names = [spec.name for spec in route.inputs]
                raise ValueError(f"route {route.name!r} has inputs {names}: name the columns of each (inputs=...)")
            chosen = list(columns) if columns is not None else [n for n in schema.names if n != id_column]
            inputs = {route.inputs[0].name: chosen}
        elif columns is not None:
            raise ValueError("give either columns or inputs, not both")
        specs = {spec.name: spec for spec in route.inputs}
        unknown = sorted(set(inputs) - set(specs))
        if unknown:
            raise ValueError(f"route {route.name!r} has no input {unknown[0]!r}; its inputs are {sorted(specs)}")
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise ValueError(f"no columns given for input {missing[0]!r} of route {route.name!r}")
        self.inputs: list[InputColumns] = []
        for name, cols in inputs.items():
            spec = specs[name]
            row_shape = _fixed_row_shape(spec, "input")
            cols = tuple(cols)
            absent = [c for c in cols if c not in schema.names]
            if absent:
                raise ValueError(f"column {absent[0]!r} (input {name!r}) is not in the input columns {schema.names}")
            item = InputColumns(spec, cols, row_shape)
            single_list = len(cols) == 1 and _is_list(schema.field(cols[0]).type)
            if not single_list and len(cols) != item.width:
                raise ValueError(
                    f"input {name!r} of route {route.name!r} needs {item.width} values per row "
                    f"(shape {list(spec.shape)}), got {len(cols)} columns {list(cols)}"
                )
            self.inputs.append(item)
        wanted = list(outputs) if outputs is not None else [spec.name for spec in route.outputs]
        out_specs = {spec.name: spec for spec in route.outputs}
        self.outputs: list[OutputColumns] = []
        for name in wanted:
            if name not in out_specs:
                raise ValueError(f"route {route.name!r} has no output {name!r}; its outputs are {sorted(out_specs)}")
            self.outputs.append(OutputColumns(out_specs[name], math.prod(_fixed_row_shape(out_specs[name], "output"))))
        self.output_names = [o.spec.name for o in self.outputs]
        taken = {self.id_name, ERROR_CODE, ERROR_MESSAGE}
        for column in (c for o in self.outputs for c in o.columns):
            if column in taken:
                raise ValueError(f"output column {column!r} collides with another output column")
            taken.add(column)
        fields = [pa.field(self.id_name, self.id_type)]
        fields += [pa.field(c, o.arrow_type) for o in self.outputs for c in o.columns]
        fields += [pa.field(ERROR_CODE, pa.string()), pa.field(ERROR_MESSAGE, pa.string())]
        self.output_schema = pa.schema(fields)

    def describe(self) -> dict[str, object]:
        """What identifies this mapping in a checkpoint: a rerun must map rows the same way."""
        return {
            "route": self.route,
            "inputs": {i.spec.name: list(i.columns) for i in self.inputs},
            "outputs": self.output_names,
            "id": self.id_name,
        }

    def row_ids(self, table: pa.Table, start: int) -> pa.Array:
        """The chunk's row ids: its id column, or positions ``start, start + 1, ...``."""
        if self.id_column is not None:
            return table.column(self.id_column).combine_chunks()
        return pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))

    def encode(self, table: pa.Table) -> EncodedChunk:
        """The chunk's rows as input arrays; rows that cannot be encoded get a ``RowError`` instead."""
        errors: dict[int, RowError] = {}
        arrays: dict[str, npt.NDArray[np.generic]] = {}
        for item in self.inputs:
            arrays[item.spec.name] = self._encode_input(table, item, errors)
        bad = np.zeros(table.num_rows, dtype=bool)
        bad[list(errors)] = True
        rows = np.flatnonzero(~bad).astype(np.int64)
        if bad.any():
            arrays = {name: array[rows] for name, array in arrays.items()}
        return EncodedChunk(rows, arrays, errors)

    def _encode_input(
        self, table: pa.Table, item: InputColumns, errors: dict[int, RowError]
    ) -> npt.NDArray[np.generic]:
        dtype = DATATYPES[item.spec.datatype]
        n = table.num_rows
        name = item.spec.name
        if len(item.columns) == 1 and _is_list(table.schema.field(item.columns[0]).type):
            column = table.column(item.columns[0]).combine_chunks()
            fixed = pa.types.is_fixed_size_list(column.type) and column.type.list_size == item.width
            if fixed and not column.null_count:
                flat = _to_numpy(column.flatten(), dtype)
                return flat.reshape((n, *item.row_shape))
            out = np.zeros((n, item.width), dtype=dtype)
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
            for row in range(n):
                if nulls[row]:
                    errors.setdefault(row, RowError("INVALID_ARGUMENT", f"row has no value for input {name!r}"))
                elif int(lengths[row]) != item.width:
                    errors.setdefault(
                        row,
                        RowError(
                            "INVALID_ARGUMENT",
                            f"row has {int(lengths[row])} values, input {name!r} needs {item.width} "
                            f"(shape {list(item.spec.shape)})",
                        ),
                    )
                else:
                    out[row] = _to_numpy(column[row].values, dtype)
            return out.reshape((n, *item.row_shape))
        out = np.empty((n, item.width), dtype=dtype)
        for j, col_name in enumerate(item.columns):
            column = table.column(col_name).combine_chunks()
            if column.null_count and dtype.kind != "f":
                for row in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)):
                    errors.setdefault(
                        int(row), RowError("INVALID_ARGUMENT", f"column {col_name!r} is null (input {name!r})")
                    )
                column = column.fill_null(0)
            out[:, j] = _to_numpy(column, dtype)
        return out.reshape((n, *item.row_shape))

    def chunk_table(
        self,
        ids: pa.Array,
        predictions: Mapping[str, npt.NDArray[np.generic]],
        ok_rows: npt.NDArray[np.int64],
        errors: Mapping[int, RowError],
    ) -> pa.Table:
        """A chunk's output table: ``predictions`` (one row per ``ok_rows`` entry) and ``errors`` by row."""
        n = len(ids)
        ok = np.zeros(n, dtype=bool)
        ok[ok_rows] = True
        columns: list[pa.Array] = [ids]
        for output in self.outputs:
            values = predictions.get(output.spec.name)
            flat = (
                np.zeros((0, output.width))
                if values is None
                else np.asarray(values).reshape(len(ok_rows), output.width)
            )
            for j in range(output.width):
                full = np.zeros(n, dtype=flat.dtype if flat.dtype != object else object)
                if len(ok_rows):
                    full[ok_rows] = flat[:, j]
                columns.append(pa.array(full, type=output.arrow_type, mask=~ok))
        codes = [None if ok[i] else errors[i].code for i in range(n)]
        messages = [None if ok[i] else errors[i].message for i in range(n)]
        columns += [pa.array(codes, pa.string()), pa.array(messages, pa.string())]
        return pa.Table.from_arrays(columns, schema=self.output_schema)


def _is_list(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype))


def _to_numpy(array: pa.Array, dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    if dtype.kind == "O":
        return np.array(array.to_pylist(), dtype=object)
    if dtype.kind == "f":
        array = array.fill_null(float("nan")) if array.null_count else array
    return np.asarray(array.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)
