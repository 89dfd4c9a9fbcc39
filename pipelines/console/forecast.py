"""The Forecast panel's data: a store's daily sales forecast, asked of the served model through the V2
endpoint exactly as any client asks it (the same request body as the traffic generator sends).

The request is the model's signature columns for each day of the range: the store, its day of week,
Open (every day but Sunday, when Rossmann stores are mostly closed), the Promo flag the person picks,
and no state or school holiday. The answer's `model_version` and the stand-in's revision header say
which version answered: during a canary, a reload can land on either revision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from pipelines.platform.traffic import INPUT_COLUMNS, REVISION_HEADER

MAX_DAYS = 42  # the horizon the model is backtested on (model/backtest.py WINDOW_DAYS)
TIMEOUT = 10.0
_MODEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class InputError(ValueError):
    """A query parameter a person got wrong; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ForecastQuery:
    model: str
    store: int
    start: date
    end: date
    promo: bool = False

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def parse_model(value: str | None, default: str) -> str:
    model = (value or default).strip()
    if len(model) > 63 or not _MODEL.match(model):
        raise InputError("model", f"not a model name (a lowercase DNS label), got {model[:80]!r}")
    return model


def _date(params: Mapping[str, str], name: str) -> date:
    raw = (params.get(name) or "").strip()
    if not raw:
        raise InputError(name, "required, an ISO date like 2015-08-01")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InputError(name, f"not an ISO date (YYYY-MM-DD): {raw[:40]!r}") from None


def parse_query(params: Mapping[str, str], default_model: str) -> ForecastQuery:
    """Validate the form's fields; InputError names the first bad one."""
    model = parse_model(params.get("model"), default_model)
    raw_store = (params.get("store") or "").strip()
    if not re.fullmatch(r"\d{1,9}", raw_store) or int(raw_store) < 1:
        raise InputError("store", f"a positive whole store id is required, got {raw_store[:40]!r}")
    start, end = _date(params, "start"), _date(params, "end")
    if end < start:
        raise InputError("end", f"{end} is before start {start}")
    span = (end - start).days + 1
    if span > MAX_DAYS:
        raise InputError("end", f"the range is {span} days; at most {MAX_DAYS} (the model's horizon)")
    promo = (params.get("promo") or "0").strip().lower()
    if promo not in ("0", "1", "on", "off", "true", "false"):
        raise InputError("promo", f"0 or 1, got {promo[:20]!r}")
    return ForecastQuery(model, int(raw_store), start, end, promo in ("1", "on", "true"))


def v2_request(query: ForecastQuery, explain: bool = False) -> dict[str, Any]:
    """The V2 body for the query: one input per signature column, one row per day; with `explain`,
    the model's per-feature contributions are asked for too."""
    days = query.days
    columns: dict[str, tuple[str, list[Any]]] = {
        "Store": ("INT64", [query.store] * len(days)),
        "DayOfWeek": ("INT64", [d.isoweekday() for d in days]),  # Rossmann: 1 = Monday .. 7 = Sunday
        "Date": ("BYTES", [d.isoformat() for d in days]),
        "Open": ("INT64", [0 if d.isoweekday() == 7 else 1 for d in days]),
        "Promo": ("INT64", [int(query.promo)] * len(days)),
        "StateHoliday": ("BYTES", ["0"] * len(days)),
        "SchoolHoliday": ("INT64", [0] * len(days)),
    }
    assert list(columns) == INPUT_COLUMNS, "the request must follow the model's signature"
    body: dict[str, Any] = {
        "inputs": [
            {"name": name, "datatype": dtype, "shape": [len(days)], "data": data}
            for name, (dtype, data) in columns.items()
        ]
    }
    if explain:
        body["outputs"] = [{"name": "predictions"}, {"name": "contributions"}]
    return body


@dataclass(frozen=True)
class Forecast:
    query: ForecastQuery
    url: str
    days: list[date]
    values: list[float]
    model_version: str
    revision: str
    error: str | None = None
    client_error: bool = False  # the endpoint refused the input (4xx): the person can fix it
    # Mean contribution of each feature to log1p(sales) over the open days (TreeSHAP, from the V2
    # `contributions` output), largest first; empty when the served version cannot explain.
    contributions: list[tuple[str, float]] = field(default_factory=list)


def infer_url(serve_url: str, model: str) -> str:
    return f"{serve_url.rstrip('/')}/v2/models/{model}/infer"


def gather_forecast(serve_url: str, query: ForecastQuery, client: httpx.Client | None = None) -> Forecast:
    url = infer_url(serve_url, query.model)

    def failed(message: str, client_error: bool = False) -> Forecast:
        return Forecast(query, url, [], [], "", "", error=message, client_error=client_error)

    try:
        if client is None:
            with httpx.Client(timeout=TIMEOUT) as own:
                resp = _ask(own, url, query)
        else:
            resp = _ask(client, url, query)
    except httpx.HTTPError as exc:
        return failed(f"the V2 endpoint {url} did not answer: {type(exc).__name__}: {exc}")
    if resp.status_code != 200:
        detail = resp.text[:300]
        return failed(f"the V2 endpoint answered HTTP {resp.status_code}: {detail}", 400 <= resp.status_code < 500)
    try:
        body = resp.json()
        outputs = {o["name"]: o for o in body["outputs"]}
        values = [float(v) for v in outputs["predictions"]["data"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return failed(f"the V2 endpoint's answer has no predictions: {exc}")
    if len(values) != len(query.days):
        return failed(f"asked for {len(query.days)} days, the V2 endpoint answered {len(values)} predictions")
    return Forecast(
        query,
        url,
        query.days,
        values,
        str(body.get("model_version") or ""),
        resp.headers.get(REVISION_HEADER, ""),
        contributions=mean_contributions(outputs.get("contributions"), values),
    )


def _ask(client: httpx.Client, url: str, query: ForecastQuery) -> httpx.Response:
    """Predictions with contributions; a version that cannot explain (400 naming `outputs`) is asked
    again for predictions alone."""
    resp = client.post(url, json=v2_request(query, explain=True))
    if resp.status_code == 400 and "outputs" in resp.text:
        resp = client.post(url, json=v2_request(query))
    return resp


def mean_contributions(output: Mapping[str, Any] | None, values: list[float]) -> list[tuple[str, float]]:
    """Per feature, the mean contribution over the days the store is open (closed days forecast 0
    whatever the model says), bias left out; largest magnitude first."""
    if not output:
        return []
    try:
        names = str(output["parameters"]["feature_names"]).split(",")
        flat = [float(v) for v in _flatten(output["data"])]
    except (KeyError, TypeError, ValueError):
        return []
    width = len(names)
    if width == 0 or len(flat) != width * len(values):
        return []
    rows = [flat[i * width : (i + 1) * width] for i, v in enumerate(values) if v > 0]
    if not rows:
        return []
    means = [(name, sum(r[j] for r in rows) / len(rows)) for j, name in enumerate(names) if name != "bias"]
    return sorted(means, key=lambda kv: -abs(kv[1]))


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return list(data)
