"""Check a REST request in the binary tensor extension before KServe decodes it.

The extension sends a JSON header of `Inference-Header-Content-Length` bytes, then each input's raw
bytes (`parameters.binary_data_size` of them); a BYTES element is a 4-byte little-endian length and
that many bytes. KServe 0.21's `InferRequest.from_bytes` decodes every BYTES input to UTF-8 text at
once and raises `struct.error` for a length prefix that runs past the data and its own
InferenceError for bytes that are not UTF-8: both were 500s, naming no input. Checked here first,
each is a 400 naming the input.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from serving.decode import RequestError, check_datatype_names

HEADER_LENGTH = "inference-header-content-length"


def header_length(value: str, body_size: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise RequestError(HEADER_LENGTH, f"got {value!r}; expected the JSON header's length in bytes") from None
    if not 0 < n <= body_size:
        raise RequestError(HEADER_LENGTH, f"{n} is not within the body's {body_size} bytes")
    return n


def check_binary_request(body: bytes, json_length: int) -> None:
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as e:
        raise RequestError("body", f"the JSON header ({json_length} bytes) is malformed: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError("body", "the JSON header is not a V2 inference request with `inputs`")
    inputs = header["inputs"]
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in inputs):
        raise RequestError("inputs", "every input needs a `name`")
    check_datatype_names((i["name"], str(i.get("datatype", ""))) for i in inputs)
    offset = json_length
    for inp in inputs:
        size = _binary_size(inp)
        if size is None:
            continue
        if offset + size > len(body):
            raise RequestError(inp["name"], f"binary_data_size {size} runs past the end of the body")
        if inp["datatype"] == "BYTES":
            _check_bytes_elements(inp["name"], body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise RequestError("body", f"{len(body) - offset} bytes after the last binary input")


def _binary_size(inp: dict[str, Any]) -> int | None:
    params = inp.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is None or "data" in inp:
        return None  # a JSON input (KServe reads `data` first)
    if type(size) is not int or size < 0:
        raise RequestError(inp["name"], f"parameters.binary_data_size {size!r}: expected a byte count")
    return size


def _check_bytes_elements(name: str, raw: bytes) -> None:
    offset, row = 0, 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(name, f"BYTES element {row}: its 4-byte length prefix is cut off")
        (length,) = struct.unpack_from("<I", raw, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            raise RequestError(name, f"BYTES element {row}: length prefix {length} runs past binary_data_size")
        try:
            raw[start:offset].decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(name, f"row {row} is not valid UTF-8") from None
        row += 1
