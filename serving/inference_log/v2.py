"""Decode the Open Inference Protocol (V2) bodies the payload logger forwards into per-row columns.

The receiver checks every body before acknowledging it, so that what it accepts can always be
written as typed Parquet later: a body that is not a V2 request or response is a PayloadError naming
the field, which the server answers with a 400. Tensors sent with the binary tensor extension
(`parameters.binary_data_size`, e.g. tritonclient's default for outputs) are decoded too.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# V2 datatype -> the Parquet column kind it is stored as.
KINDS: dict[str, str] = {
    **{t: "int64" for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")},
    **{t: "float64" for t in ("FP16", "FP32", "FP64")},
    "BYTES": "string",
    "BOOL": "bool",
}
# struct formats of the binary tensor extension (little-endian, packed row-major).
_BINARY = {
    "BOOL": "?",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
PREDICTION_OUTPUT = "predictions"
_INT64 = (-(2**63), 2**63 - 1)


class PayloadError(ValueError):
    """The body is not a V2 request/response; the message starts with the field at fault."""


@dataclass(frozen=True)
class Tensor:
    name: str
    kind: str  # int64 | float64 | string | bool
    width: int  # values per row: 1 is a scalar column, more a list column
    values: list[Any]  # flattened row-major: rows * width values


@dataclass(frozen=True)
class RequestPayload:
    request_id: str
    rows: int
    inputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class ResponsePayload:
    request_id: str
    version: str
    rows: int
    predictions: list[float | None]  # one per row; None where the output has no number for it


def decode_request(body: bytes) -> RequestPayload:
    doc, binary = _load(body)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError("body.inputs: missing or empty; expected a list of V2 input tensors")
    tensors: list[Tensor] = []
    rows: int | None = None
    seen: set[str] = set()
    for i, raw in enumerate(inputs):
        field = f"body.inputs[{i}]"
        tensor, n = _tensor(raw, field, binary)
        if tensor.name in seen:
            raise PayloadError(f"{field}.name: input {tensor.name!r} given twice")
        seen.add(tensor.name)
        if rows is None:
            rows = n
        elif n != rows:
            raise PayloadError(f"{field} ({tensor.name}).shape: {n} rows, but the first input has {rows}")
        tensors.append(tensor)
    binary.expect_consumed("body.inputs")
    return RequestPayload(request_id=_id(doc), rows=rows or 0, inputs=tuple(tensors))


def decode_response(body: bytes) -> ResponsePayload:
    doc, binary = _load(body)
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise PayloadError("body.outputs: missing or empty; expected a list of V2 output tensors")
    decoded = [_tensor(raw, f"body.outputs[{i}]", binary) for i, raw in enumerate(outputs)]
    binary.expect_consumed("body.outputs")
    by_name = {t.name: (t, n) for t, n in decoded}
    tensor, rows = by_name.get(PREDICTION_OUTPUT, decoded[0])
    if tensor.width == 1 and tensor.kind in ("float64", "int64"):
        predictions: list[float | None] = [float(v) for v in tensor.values]
    else:  # a vector or text per row: no single number to store
        predictions = [None] * rows
    version = doc.get("model_version")
    return ResponsePayload(
        request_id=_id(doc),
        version="" if version is None else str(version),
        rows=rows,
        predictions=predictions,
    )


def _id(doc: Mapping[str, Any]) -> str:
    value = doc.get("id")
    return "" if value is None else str(value)


class _Binary:
    """The bytes after the JSON header (binary tensor extension), handed out tensor by tensor."""

    def __init__(self, data: bytes):
        self._data = data
        self._at = 0

    def take(self, size: int, field: str) -> bytes:
        if self._at + size > len(self._data):
            raise PayloadError(f"{field}.parameters.binary_data_size: {size} bytes, but the body ends before them")
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk

    def expect_consumed(self, field: str) -> None:
        if self._at != len(self._data):
            raise PayloadError(f"{field}: {len(self._data) - self._at} bytes after the JSON that no tensor claims")


def _load(body: bytes) -> tuple[dict[str, Any], _Binary]:
    if not body:
        raise PayloadError("body: empty; expected a V2 JSON object")
    try:
        doc = json.loads(body)
        rest = b""
    except ValueError as e:
        # The binary tensor extension: a JSON header followed by raw tensor bytes.
        text = body.decode("utf-8", errors="surrogateescape")
        try:
            doc, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            raise PayloadError(f"body: not JSON ({e})") from None
        rest = body[len(text[:end].encode("utf-8", errors="surrogateescape")) :]
    if not isinstance(doc, dict):
        raise PayloadError(f"body: a JSON {type(doc).__name__}; expected a V2 JSON object")
    return doc, _Binary(rest)


def _tensor(raw: Any, field: str, binary: _Binary) -> tuple[Tensor, int]:
    """The tensor and its row count (the first dimension)."""
    if not isinstance(raw, dict):
        raise PayloadError(f"{field}: expected an object with name, datatype, shape and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PayloadError(f"{field}.name: missing; expected a non-empty string")
    field = f"{field} ({name})"
    datatype = raw.get("datatype")
    if datatype not in KINDS:
        raise PayloadError(f"{field}.datatype: {datatype!r}; expected one of {', '.join(KINDS)}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise PayloadError(f"{field}.shape: {shape!r}; expected a list of non-negative integers")
    count = math.prod(shape)
    params = raw.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0:
            raise PayloadError(f"{field}.parameters.binary_data_size: {size!r}; expected a byte count")
        values = _from_binary(binary.take(size, field), datatype, count, field)
    else:
        if "data" not in raw:
            raise PayloadError(f"{field}.data: missing")
        values = _flatten(raw["data"])
    if len(values) != count:
        raise PayloadError(f"{field}.data: {len(values)} values, but shape {shape} needs {count}")
    kind = KINDS[datatype]
    values = _check_values(values, kind, field)
    rows = shape[0] if shape else 1
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    return Tensor(name=name, kind=kind, width=width, values=values), rows


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _check_values(values: list[Any], kind: str, field: str) -> list[Any]:
    if kind == "int64":
        if all(type(v) is int and _INT64[0] <= v <= _INT64[1] for v in values):
            return values
        fixed = []
        for j, v in enumerate(values):
            if isinstance(v, float) and v.is_integer() and _INT64[0] <= v <= _INT64[1]:
                fixed.append(int(v))
            elif type(v) is int and _INT64[0] <= v <= _INT64[1]:
                fixed.append(v)
            else:
                raise PayloadError(f"{field}.data[{j}]: {v!r} is not a 64-bit integer")
        return fixed
    if kind == "float64":
        for j, v in enumerate(values):
            if type(v) not in (int, float):
                raise PayloadError(f"{field}.data[{j}]: {v!r} is not a number")
        return values
    if kind == "string":
        for j, v in enumerate(values):
            if not isinstance(v, str):
                raise PayloadError(f"{field}.data[{j}]: {v!r} is not a string (datatype BYTES)")
        return values
    for j, v in enumerate(values):
        if not isinstance(v, bool):
            raise PayloadError(f"{field}.data[{j}]: {v!r} is not a boolean")
    return values


def _from_binary(chunk: bytes, datatype: str, count: int, field: str) -> list[Any]:
    if datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        out: list[Any] = []
        at = 0
        while at < len(chunk):
            if at + 4 > len(chunk):
                raise PayloadError(f"{field}: truncated BYTES element in the binary data")
            (n,) = struct.unpack_from("<I", chunk, at)
            out.append(chunk[at + 4 : at + 4 + n].decode("utf-8", errors="replace"))
            at += 4 + n
        return out
    fmt = _BINARY[datatype]
    itemsize = struct.calcsize(fmt)
    if len(chunk) != count * itemsize:
        raise PayloadError(f"{field}: {len(chunk)} binary bytes, but {count} {datatype} values need {count * itemsize}")
    return list(struct.unpack(f"<{count}{fmt}", chunk))
