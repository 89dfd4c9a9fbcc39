"""Turn a V2 inference request (one input per column) into a DataFrame typed like the signature.

Every check raises RequestError naming the field and what was expected, which KServe's REST server
turns into a 400 `{"error": ...}` and its gRPC server into INVALID_ARGUMENT. Nothing here may raise
anything else for bad input: an unexpected exception would become a 500.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, to_http_parameters

from serving.signature import OUTPUT_NAMES, V2_DATATYPES, Column

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_NUMPY = {"int32": np.int32, "int64": np.int64, "float32": np.float32, "float64": np.float64}


class RequestError(InvalidInput):
    """A 400: `field` is the input (or request part) at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def parameters_of(params: Any) -> dict[str, Any]:
    """Request/input parameters as a plain dict (gRPC gives a protobuf map of InferParameter)."""
    if not params:
        return {}
    if isinstance(params, Mapping) and all(not hasattr(v, "WhichOneof") for v in params.values()):
        return dict(params)
    return dict(to_http_parameters(params))


def check_datatype_names(inputs: Iterable[tuple[str, str]]) -> None:
    """Datatypes exactly as the V2 spec spells them (its Tensor Data Types table: upper case).

    KServe upper-cases whatever it is sent (InferInput), so this runs on the request as received,
    before KServe's objects are built: `int64` is an error, not INT64.
    """
    for name, datatype in inputs:
        if datatype in V2_DATATYPES:
            continue
        wrong = f"datatype {datatype!r} is not a V2 datatype"
        if datatype.upper() in V2_DATATYPES:
            raise RequestError(name, f"{wrong}; they are upper case: {datatype.upper()}")
        raise RequestError(name, f"{wrong}; expected one of {', '.join(V2_DATATYPES)}")


def check_request(request: InferRequest) -> None:
    """Request-level checks that do not depend on the columns."""
    content_type = parameters_of(request.parameters).get("content_type")
    if content_type not in (None, "pd"):
        raise RequestError(
            "parameters.content_type",
            f"got {content_type!r}; expected 'pd' (one input per column) or nothing",
        )
    for out in request.request_outputs or []:
        if out.name not in OUTPUT_NAMES:
            raise RequestError("outputs", f"unknown output {out.name!r}; expected one of {list(OUTPUT_NAMES)}")
    if not request.inputs:
        raise RequestError("inputs", "no inputs; expected one input per column")


def decode_request(request: InferRequest, columns: Sequence[Column], max_rows: int) -> pd.DataFrame:
    return pd.DataFrame(decode_columns(request, columns, max_rows))


def decode_columns(request: InferRequest, columns: Sequence[Column], max_rows: int) -> dict[str, Any]:
    """The request's columns, each typed like the signature, all of one length (at least one row)."""
    check_request(request)
    by_name = {c.name: c for c in columns}
    inputs: dict[str, InferInput] = {}
    for inp in request.inputs:
        if inp.name in inputs:
            raise RequestError(inp.name, "input given twice; expected one input per column")
        if inp.name not in by_name:
            raise RequestError(inp.name, f"unknown input; expected inputs {list(by_name)}")
        inputs[inp.name] = inp
    for col in columns:
        if col.required and col.name not in inputs:
            raise RequestError(col.name, f"missing input; expected {col.datatype} with shape [n]")

    frame: dict[str, Any] = {}
    n_rows: int | None = None
    first = ""
    for col in columns:
        if col.name not in inputs:
            continue
        inp = inputs[col.name]
        rows = _rows_from_shape(inp, max_rows)
        frame[col.name] = _decode_column(inp, col, rows)  # first: shape vs own data is the clearer error
        if n_rows is None:
            n_rows, first = rows, col.name
        elif rows != n_rows:
            raise RequestError(col.name, f"has {rows} rows but {first!r} has {n_rows}; columns must be equal")
    return frame


def _rows_from_shape(inp: InferInput, max_rows: int) -> int:
    # The row limit is checked from the declared shape, before any data is decoded.
    shape = list(inp.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        raise RequestError(inp.name, f"shape {shape} not accepted; expected [n] or [n, 1]")
    rows = int(shape[0])
    if rows == 0:
        raise RequestError(inp.name, "shape [0]: expected at least one row")
    if rows > max_rows:
        raise RequestError(inp.name, f"{rows} rows exceed this server's limit of {max_rows} per request")
    return rows


def _values(inp: InferInput, rows: int) -> np.ndarray:
    """The input's data as a flat array with exactly `rows` elements."""
    try:
        # _raw_data: the binary tensor extension (REST) or raw_input_contents (gRPC).
        arr = inp.as_numpy() if inp._raw_data is not None else np.asarray(inp.data)
    except struct.error:
        raise RequestError(inp.name, "BYTES raw contents: a length prefix runs past the end of the data") from None
    except (ValueError, TypeError, InvalidInput) as e:
        raise RequestError(
            inp.name, f"data does not match datatype {inp.datatype} and shape {inp.shape}: {e}"
        ) from None
    if arr.dtype == object and arr.ndim == 1 and arr.size and isinstance(arr[0], list):
        raise RequestError(inp.name, "data is ragged; expected a flat list of values")
    flat = arr.reshape(-1)
    if flat.size != rows:
        raise RequestError(inp.name, f"shape {list(inp.shape)} says {rows} rows but data has {flat.size} values")
    return flat


def _flat_list(inp: InferInput, rows: int) -> list[Any]:
    """String data as a Python list: numpy would silently turn numbers into strings."""
    if inp._raw_data is not None:
        return _values(inp, rows).tolist()
    data = list(inp.data)
    if data and all(isinstance(v, list) for v in data):  # [[a], [b]] for shape [n, 1]
        data = [x for v in data for x in v]
    if len(data) != rows:
        raise RequestError(inp.name, f"shape {list(inp.shape)} says {rows} rows but data has {len(data)} values")
    return data


def _decode_column(inp: InferInput, col: Column, rows: int) -> Any:
    if inp.datatype not in col.accepted:
        raise RequestError(
            col.name, f"datatype {inp.datatype} not accepted; expected {col.datatype} ({col.mlflow_type})"
        )
    if col.kind in ("str", "bytes", "datetime"):
        strings = _strings(_flat_list(inp, rows), col)
        if col.kind == "str":
            _no_surrounding_space(strings, col)
        if col.kind == "bytes":
            return [s.encode() for s in strings]
        if col.kind == "datetime":
            return _datetimes(strings, col)
        return np.asarray(strings, dtype=object)
    values = _values(inp, rows)
    # numpy turns [1, true] into [1, 1]: look for JSON booleans in the data as sent.
    if inp._raw_data is None and values.dtype.kind in "iuf" and _has_bool(inp.data):
        raise RequestError(col.name, f"expected {col.datatype} numbers, got true/false")
    if col.kind in _INT_RANGES:
        return _ints(values, col)
    if col.kind in ("float32", "float64"):
        return _floats(values, col)
    if col.kind == "bool":
        if values.dtype != np.bool_:
            raise RequestError(col.name, "expected true/false values")
        return values
    raise AssertionError(f"unhandled column kind {col.kind}")


def _ints(values: np.ndarray, col: Column) -> np.ndarray:
    lo, hi = _INT_RANGES[col.kind]
    if values.dtype.kind == "f":  # JSON floats, or integers too large for int64 that numpy made floats
        nonfinite = np.flatnonzero(~np.isfinite(values))
        if nonfinite.size:
            row = int(nonfinite[0])
            raise RequestError(col.name, f"row {row} is a non-finite number ({values[row]}); expected integers")
        fractional = np.flatnonzero(values != np.trunc(values))
        if fractional.size:
            row = int(fractional[0])
            raise RequestError(col.name, f"row {row} is a fractional number ({values[row]}); expected integers")
        if float(values.min()) < lo or float(values.max()) > hi:
            raise RequestError(col.name, f"values out of range for {col.datatype}")
        raise RequestError(col.name, f"got floats ({values[0]}); expected integers ({col.datatype})")
    if values.dtype.kind not in "iu":
        raise RequestError(col.name, f"expected integers ({col.datatype}), got {_describe(values)}")
    if values.size and (int(values.min()) < lo or int(values.max()) > hi):
        raise RequestError(col.name, f"values out of range for {col.datatype}")
    return values.astype(_NUMPY[col.kind], copy=False)


def _floats(values: np.ndarray, col: Column) -> np.ndarray:
    if values.dtype.kind not in "iuf":
        raise RequestError(col.name, f"expected numbers ({col.datatype}), got {_describe(values)}")
    out = values.astype(_NUMPY[col.kind], copy=False)
    finite = np.isfinite(out)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise RequestError(col.name, f"row {bad} is not a finite number ({out[bad]!r}); expected finite numbers")
    return out


def _strings(values: list[Any], col: Column) -> list[str]:
    out: list[str] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, bytes):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise RequestError(col.name, f"row {i} is not valid UTF-8") from None
        else:
            raise RequestError(col.name, f"row {i} is {type(v).__name__} {v!r}; expected strings (BYTES)")
    return out


def _no_surrounding_space(strings: list[str], col: Column) -> None:
    # A model may strip what it is sent (this one does): "0 " would then be scored as "0" although it
    # is no value the model knows. The runtime passes values exactly as sent, so it refuses them.
    for i, s in enumerate(strings):
        if s != s.strip():
            raise RequestError(col.name, f"row {i} is {s!r}, with surrounding whitespace; send the value exactly")


def _datetimes(strings: list[str], col: Column) -> pd.Series:
    try:
        return pd.Series(pd.to_datetime(strings, format="ISO8601"))
    except (ValueError, TypeError) as e:
        raise RequestError(col.name, f"expected ISO 8601 dates/times: {e}") from None


def _has_bool(data: list[Any]) -> bool:
    return any(type(v) is bool or (type(v) is list and any(type(x) is bool for x in v)) for v in data)


def _describe(values: np.ndarray) -> str:
    kinds = {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed values", "f": "floats"}
    return kinds.get(values.dtype.kind, str(values.dtype))
