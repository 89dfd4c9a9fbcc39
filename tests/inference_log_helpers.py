"""V2 bodies of the Rossmann model and KServe-style events for the inference-log tests."""

from __future__ import annotations

import json
from typing import Any, Literal

from serving.inference_log.sender import logger_event

MODEL = "rossmann"
NAMESPACE = "sluice-serving"
INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


def rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n Rossmann-shaped input rows, different for each seed."""
    out = []
    for i in range(n):
        k = seed * 1000 + i
        out.append(
            {
                "Store": 1 + k % 1115,
                "DayOfWeek": 1 + k % 7,
                "Date": f"2015-07-{1 + k % 28:02d}",
                "Open": 1,
                "Promo": k % 2,
                "StateHoliday": "0" if k % 5 else "a",
                "SchoolHoliday": (k // 2) % 2,
            }
        )
    return out


def request_body(data: list[dict[str, Any]], request_id: str = "") -> bytes:
    inputs = []
    for name in ("Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"):
        datatype = "INT64" if name in INT_COLUMNS else "BYTES"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(data)], "data": [r[name] for r in data]})
    body: dict[str, Any] = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def predictions(data: list[dict[str, Any]]) -> list[float]:
    """Values a model could return; exact in float32 so the response's FP32 data round-trips."""
    return [float(1000 + r["Store"] * 4 + r["Promo"] * 500) + 0.5 for r in data]


def response_body(data: list[dict[str, Any]], version: str = "3", request_id: str = "") -> bytes:
    preds = predictions(data)
    body: dict[str, Any] = {
        "model_name": MODEL,
        "model_version": version,
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [len(preds)], "data": preds}],
    }
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def event(
    kind: Literal["request", "response"], ce_id: str, body: bytes, revision: str = "rossmann-predictor-00003", **kw: Any
) -> tuple[dict[str, str], bytes]:
    return logger_event(
        kind,
        ce_id,
        body,
        model=kw.pop("model", MODEL),
        namespace=kw.pop("namespace", NAMESPACE),
        endpoint=kw.pop("endpoint", "default"),
        revision=revision,
        **kw,
    )
