"""The stored form of the inference log: Parquet schema and S3 key layout (the reader's contract).

One row per predicted row:
    ce_id string, model string, version string, revision string, namespace string, endpoint string,
    received_at timestamp[us, UTC], request_id string, row int32,
    one column per V2 input tensor, named after it (int64 for INT*/UINT*, float64 for FP*, string for
    BYTES, bool for BOOL; a list of those when a tensor has several values per row; an input whose
    name is one of the columns above or `prediction` is stored as `input_<name>`),
    prediction float64 (the `predictions` output, else the first output; null without a response).
Keys: <prefix>model=<model>/version=<version>/date=<YYYY-MM-DD>/part-<UTC timestamp>-<uuid>.parquet,
the date being received_at's (UTC); an empty version (a request whose response never came) is
Hive's `__HIVE_DEFAULT_PARTITION__`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa

from serving.inference_log.config import EMPTY_PARTITION
from serving.inference_log.pairing import Record
from serving.inference_log.v2 import RequestPayload, ResponsePayload, Tensor

FIXED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("ce_id", pa.string()),
    ("model", pa.string()),
    ("version", pa.string()),
    ("revision", pa.string()),
    ("namespace", pa.string()),
    ("endpoint", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")),
    ("request_id", pa.string()),
    ("row", pa.int32()),
)
PREDICTION = ("prediction", pa.float64())
RESERVED = frozenset([name for name, _ in FIXED_COLUMNS] + [PREDICTION[0]])
ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}
_KEY = re.compile(r"model=(?P<model>[^/]+)/version=(?P<version>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")


def column_name(input_name: str) -> str:
    return f"input_{input_name}" if input_name in RESERVED else input_name


def partition_value(value: str) -> str:
    return quote(value, safe="-_.") if value else EMPTY_PARTITION


def partition_dir(model: str, version: str, date: str) -> str:
    return f"model={partition_value(model)}/version={partition_value(version)}/date={date}/"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """(model, version, date) of a log object's key, or None when it is not one."""
    match = _KEY.search(key)
    if match is None:
        return None
    model, version = (unquote(v) if v != EMPTY_PARTITION else "" for v in match.group("model", "version"))
    return model, version, match.group("date")


def part_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"part-{stamp}-{uuid.uuid4().hex}.parquet"


def _input_signature(tensors: Iterable[Tensor]) -> tuple[tuple[str, str, int], ...]:
    return tuple((column_name(t.name), t.kind, t.width) for t in tensors)


@dataclass
class _Builder:
    """Columns of one file: one partition and one set of input columns."""

    inputs: tuple[tuple[str, str, int], ...]
    fixed: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name, _ in FIXED_COLUMNS})
    values: dict[str, list[Any]] = field(default_factory=dict)
    predictions: list[float | None] = field(default_factory=list)

    def add(self, record: Record) -> None:
        request, response = record.request, record.response
        req = request.payload if request is not None else None
        resp = response.payload if response is not None else None
        assert req is None or isinstance(req, RequestPayload)
        assert resp is None or isinstance(resp, ResponsePayload)
        first = record.first
        n = record.rows
        revision = (request.revision if request is not None else "") or (response.revision if response else "")
        fixed = {
            "ce_id": first.ce_id,
            "model": first.model,
            "version": resp.version if resp is not None else "",
            "revision": revision,
            "namespace": first.namespace,
            "endpoint": first.endpoint,
            "received_at": first.received_at_us,
            "request_id": (req.request_id if req is not None else "") or (resp.request_id if resp is not None else ""),
        }
        for name, value in fixed.items():
            self.fixed[name].extend([value] * n)
        self.fixed["row"].extend(range(n))
        if req is not None:
            for tensor, (name, _, width) in zip(req.inputs, self.inputs, strict=True):
                column = self.values.setdefault(name, [])
                if width == 1:
                    column.extend(tensor.values)
                else:
                    column.extend(tensor.values[i * width : (i + 1) * width] for i in range(n))
        if resp is None:
            self.predictions.extend([None] * n)
        else:
            preds = resp.predictions
            self.predictions.extend(preds[i] if i < len(preds) else None for i in range(n))

    def table(self) -> pa.Table:
        arrays = [pa.array(self.fixed[name], type=t) for name, t in FIXED_COLUMNS]
        names = [name for name, _ in FIXED_COLUMNS]
        for name, kind, width in self.inputs:
            arrow = ARROW_TYPES[kind] if width == 1 else pa.list_(ARROW_TYPES[kind])
            arrays.append(pa.array(self.values.get(name, []), type=arrow))
            names.append(name)
        arrays.append(pa.array(self.predictions, type=PREDICTION[1]))
        names.append(PREDICTION[0])
        return pa.Table.from_arrays(arrays, names=names)


def tables(records: Iterable[Record]) -> dict[str, pa.Table]:
    """Records grouped into files: relative key (under the prefix) -> table. A partition gets one
    file per set of input columns (usually one; a request with other inputs gets a file of its own)."""
    builders: dict[tuple[str, str, str, tuple[tuple[str, str, int], ...]], _Builder] = {}
    for record in records:
        if record.rows == 0:
            continue
        first = record.first
        version = ""
        if record.response is not None:
            assert isinstance(record.response.payload, ResponsePayload)
            version = record.response.payload.version
        date = datetime.fromtimestamp(first.received_at_us / 1e6, UTC).strftime("%Y-%m-%d")
        signature: tuple[tuple[str, str, int], ...] = ()
        if record.request is not None:
            assert isinstance(record.request.payload, RequestPayload)
            signature = _input_signature(record.request.payload.inputs)
        key = (first.model, version, date, signature)
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = _Builder(inputs=signature)
        builder.add(record)
    now = datetime.now(UTC)
    return {partition_dir(m, v, d) + part_name(now): b.table() for (m, v, d, _), b in builders.items()}


def warm_up() -> None:
    """Pay pyarrow's one-time costs (its first array() imports pandas when installed) at start."""
    pa.array([0], type=pa.int64())
