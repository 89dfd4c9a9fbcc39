"""Read the inference log back from S3 as one DataFrame (for drift, feedback and people).

`read_log` lists the partitions it needs (model, version, the dates between since and until),
downloads their Parquet files, and merges halves: a request and its response stored apart (the
response came after the pair timeout, or went to another replica) share ce_id and row, and become
one row again. It also drops a row stored twice (a resend after the receiver's dedup window).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serving.inference_log.config import EMPTY_PARTITION, LogConfig
from serving.inference_log.layout import FIXED_COLUMNS, PREDICTION, partition_value

DEFAULT_PREFIX = LogConfig.prefix
_MERGED_STRINGS = ("version", "revision", "namespace", "endpoint", "request_id")
_MAX_DATES_TO_LIST = 62  # a longer range lists the whole version folder instead of one per date

TimeLike: TypeAlias = datetime | date | str | pd.Timestamp


def read_log(
    s3: Any,
    bucket: str,
    model: str,
    version: str | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> pd.DataFrame:
    """Logged rows of `model` (one version, or all), received in [since, until), oldest first.

    Columns: the fixed ones of layout.FIXED_COLUMNS, then the model's inputs, then prediction.
    Integer and boolean inputs keep their type when no row lacks them (a response stored without
    its request does), else become float/object with NaN/None; received_at is datetime64[us, UTC].
    Naive datetimes are taken as UTC.
    """
    start, end = _utc(since), _utc(until)
    keys = list(_keys(s3, bucket, prefix, model, version, start, end))
    tables = _download(s3, bucket, keys)
    if not tables:
        return _empty()
    table = _concat(tables)
    frame = table.to_pandas()
    frame = _merge_halves(frame)
    if version is not None:
        frame = frame[frame["version"] == version]
    if start is not None:
        frame = frame[frame["received_at"] >= start]
    if end is not None:
        frame = frame[frame["received_at"] < end]
    frame = _restore_types(frame, table.schema)
    inputs = [c for c in table.column_names if c not in {n for n, _ in FIXED_COLUMNS} | {PREDICTION[0]}]
    columns = [n for n, _ in FIXED_COLUMNS] + inputs + [PREDICTION[0]]
    return frame.sort_values(["received_at", "ce_id", "row"], kind="stable")[columns].reset_index(drop=True)


def _utc(value: TimeLike | None) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _list(s3: Any, bucket: str, prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    yield from s3.get_paginator("list_objects_v2").paginate(**kwargs)


def _keys(
    s3: Any,
    bucket: str,
    prefix: str,
    model: str,
    version: str | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> Iterator[str]:
    base = f"{prefix}model={partition_value(model)}/"
    if version is None:
        folders = [p["Prefix"] for page in _list(s3, bucket, base, "/") for p in page.get("CommonPrefixes", [])]
    else:
        # Requests whose response never came have no version: they may be halves of this one's rows.
        folders = [f"{base}version={partition_value(version)}/", f"{base}version={EMPTY_PARTITION}/"]
    first = start.date() if start is not None else None
    last = (end - pd.Timedelta(microseconds=1)).date() if end is not None else None
    for folder in folders:
        if first is not None and last is not None and (last - first).days < _MAX_DATES_TO_LIST:
            listings = [
                f"{folder}date={(first + timedelta(days=i)).isoformat()}/" for i in range((last - first).days + 1)
            ]
        else:
            listings = [folder]
        for listing in listings:
            for page in _list(s3, bucket, listing):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if not key.endswith(".parquet"):
                        continue
                    day = _date_of(key)
                    if day is None or (first is not None and day < first) or (last is not None and day > last):
                        continue
                    yield key


def _date_of(key: str) -> date | None:
    for part in key.split("/"):
        if part.startswith("date="):
            try:
                return date.fromisoformat(part[5:])
            except ValueError:
                return None
    return None


def _download(s3: Any, bucket: str, keys: list[str]) -> list[pa.Table]:
    def one(key: str) -> pa.Table:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return pq.read_table(pa.BufferReader(body))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, keys))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table; a column missing from a file is null there, and a column stored with different
    types in different files (a client sent Store as BYTES once) becomes a string column."""
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            types.setdefault(f.name, set()).add(f.type)
    conflicting = {name for name, ts in types.items() if len(ts) > 1}
    if conflicting:
        fixed = []
        for t in tables:
            for n in conflicting & set(t.column_names):
                t = t.set_column(t.schema.get_field_index(n), n, _to_string(t[n]))
            fixed.append(t)
        tables = fixed
    return pa.concat_tables(tables, promote_options="default")


def _to_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_list(column.type):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())])
    return column.cast(pa.string())


def _merge_halves(frame: pd.DataFrame) -> pd.DataFrame:
    twice = frame.duplicated(["ce_id", "row"], keep=False)
    if not twice.any():
        return frame
    part = frame[twice].copy()
    for column in _MERGED_STRINGS:
        part[column] = part[column].replace("", None)
    grouped = part.groupby(["ce_id", "row"], sort=False, as_index=False)
    merged = grouped.first()  # per column, the first value that is not null
    merged["received_at"] = grouped["received_at"].min()["received_at"]
    for column in _MERGED_STRINGS:
        merged[column] = merged[column].fillna("")
    return pd.concat([frame[~twice], merged[frame.columns]], ignore_index=True)


def _restore_types(frame: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """Integer and boolean columns that pandas widened for nulls, back where no null is left."""
    frame = frame.copy()
    for f in schema:
        if f.name not in frame.columns:
            continue
        if f.type == pa.int64() and frame[f.name].dtype != "int64" and frame[f.name].notna().all():
            frame[f.name] = frame[f.name].astype("int64")
        elif f.type == pa.bool_() and frame[f.name].dtype != "bool" and frame[f.name].notna().all():
            frame[f.name] = frame[f.name].astype("bool")
        elif f.type == pa.int32() and frame[f.name].dtype != "int32" and frame[f.name].notna().all():
            frame[f.name] = frame[f.name].astype("int32")
    return frame


def _empty() -> pd.DataFrame:
    schema = pa.schema([*FIXED_COLUMNS, PREDICTION])
    return schema.empty_table().to_pandas()
