"""Rossmann-shaped traffic for the drift and feedback tests, and an inference log written to S3 the
way the receiver writes it (its own event parsing, pairing record and Parquet layout)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from model.schema import INPUT_COLUMNS
from serving.inference_log.config import LogConfig
from serving.inference_log.events import parse_event
from serving.inference_log.layout import tables
from serving.inference_log.pairing import Record
from serving.inference_log.sender import logger_event

INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")
_WEEKLY = {1: 1.2, 2: 1.0, 3: 0.95, 4: 0.95, 5: 1.05, 6: 0.85, 7: 0.7}


def traffic(
    start: str, days: int, stores: int = 40, seed: int = 0, promo_weekday: set[int] | None = None
) -> pd.DataFrame:
    """Store-days with Rossmann's cycles: closed on Sundays, promos Mon-Fri of every other ISO week,
    and a prediction that follows store level, weekday and promo. `promo_weekday`: promo on these
    days of the week in every week instead (a changed promo pattern)."""
    rng = np.random.default_rng(seed)
    level = np.random.default_rng(99).uniform(3000, 9000, stores + 1)  # per store, the same in every call
    dates = pd.date_range(start, periods=days, freq="D")
    grid = pd.MultiIndex.from_product([dates, range(1, stores + 1)], names=["Date", "Store"]).to_frame(index=False)
    dow = grid["Date"].dt.dayofweek.to_numpy() + 1
    week = grid["Date"].dt.isocalendar().week.to_numpy()
    if promo_weekday is None:
        promo = ((week % 2 == 0) & (dow <= 5)).astype("int64")
    else:
        promo = np.isin(dow, list(promo_weekday)).astype("int64")
    open_ = (dow != 7).astype("int64")
    pred = level[grid["Store"]] * np.vectorize(_WEEKLY.get)(dow) * np.where(promo == 1, 1.3, 1.0)
    pred = pred * rng.lognormal(0, 0.05, len(grid)) * open_
    return pd.DataFrame(
        {
            "Store": grid["Store"].astype("int64"),
            "DayOfWeek": dow.astype("int64"),
            "Date": grid["Date"].dt.strftime("%Y-%m-%d"),
            "Open": open_,
            "Promo": promo,
            "StateHoliday": "0",
            "SchoolHoliday": (rng.random(len(grid)) < 0.2).astype("int64"),
            "prediction": pred.astype("float64"),
        }
    )


def _bodies(frame: pd.DataFrame, version: str) -> tuple[bytes, bytes]:
    inputs = [
        {
            "name": c,
            "datatype": "INT64" if c in INT_COLUMNS else "BYTES",
            "shape": [len(frame)],
            "data": frame[c].tolist(),
        }
        for c in INPUT_COLUMNS
    ]
    request = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    response = {
        "model_name": "m",
        "model_version": version,
        "outputs": [
            {"name": "predictions", "datatype": "FP64", "shape": [len(frame)], "data": frame["prediction"].tolist()}
        ],
    }
    return json.dumps(request).encode(), json.dumps(response).encode()


def write_log(
    s3: Any, bucket: str, model: str, version: str, frame: pd.DataFrame, at: datetime | None = None, batch: int = 500
) -> list[str]:
    """Store `frame` (inputs + prediction) as logged inferences of `version`, `batch` rows per request,
    through the receiver's parsing and Parquet layout; returns the S3 keys written."""
    at = at or datetime.now(UTC)
    received_us = int(at.timestamp() * 1_000_000)
    records = []
    for i, start in enumerate(range(0, len(frame), batch)):
        part = frame.iloc[start : start + batch]
        request, response = _bodies(part, version)
        ce_id = uuid.uuid4().hex
        halves = []
        for kind, body in (("request", request), ("response", response)):
            headers, data = logger_event(
                kind,
                ce_id,
                body,
                model=model,
                namespace="sluice-serving",
                endpoint="default",
                revision=f"{model}-predictor-1",
            )
            halves.append(parse_event(headers, data, received_us + i))
        records.append(Record(request=halves[0], response=halves[1]))
    keys = []
    for key, table in tables(records).items():
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        full = LogConfig.prefix + key
        s3.put_object(Bucket=bucket, Key=full, Body=buffer.getvalue())
        keys.append(full)
    return keys


def post_log(url: str, model: str, version: str, frame: pd.DataFrame, batch: int = 500) -> int:
    """Send `frame` to a running receiver as KServe's payload logger would (a request and a response
    event per `batch` rows); returns the events it acknowledged."""
    import httpx

    acknowledged = 0
    with httpx.Client(timeout=10) as client:
        for start in range(0, len(frame), batch):
            request, response = _bodies(frame.iloc[start : start + batch], version)
            ce_id = uuid.uuid4().hex
            for kind, body in (("request", request), ("response", response)):
                headers, data = logger_event(
                    kind, ce_id, body, model=model, namespace="sluice-serving", endpoint="default",
                    revision=f"{model}-predictor-{version}",
                )  # fmt: skip
                got = client.post(url, headers=headers, content=data)
                got.raise_for_status()
                acknowledged += 1
    return acknowledged
