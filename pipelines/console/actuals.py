"""The Forecast page's recent actual sales: the store's real days from the data the answering version
was trained on, rebuilt from that version's `data.source` MLflow tag.

Why that data: it is the only record of actual sales every served version has (the feedback actuals
exist only where someone ran `sluice feedback`), it is what the model learned from, and its last day
is where a forecast picks up. Generated data is rebuilt from its seed; a `dir:` source is read only
when that folder is on this machine: other data (ROSSMANN_DATA_DIR, another seed) would show some
other store's sales under this one's name, so a missing source is a message, never a stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.console.forecast import Forecast

DAYS_BEFORE = 42  # six weeks of history before the forecast: six of each weekday, the model's horizon
SOURCE_TAG = "data.source"


class ActualsUnavailable(Exception):
    """This machine cannot rebuild the data a tag names (its message is shown in the panel)."""


@dataclass(frozen=True)
class Actuals:
    version: str
    source: str
    days: list[date] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    last_day: date | None = None  # the data's last day, where actuals stop
    error: str | None = None


@dataclass(frozen=True)
class Row:
    """One line of the page's table: a day with its actual sales, its forecast, or both."""

    day: date
    actual: float | None
    forecast: float | None


def window(start: date, end: date, last_day: date, days: int = DAYS_BEFORE) -> tuple[date, date]:
    """The actual days to show: `days` before the forecast's first day, or before the data's end when
    the forecast starts later than that, through the forecast's last day as far as the data goes
    (a range inside the data shows the actuals next to the forecast for the same days)."""
    anchor = min(start, last_day + timedelta(days=1))
    return anchor - timedelta(days=days), min(end, last_day)


def store_days(frame: pd.DataFrame, store: int, first: date, last: date) -> list[tuple[date, float]]:
    """The store's (day, sales) in [first, last], by day; `frame` has Store, Date and Sales columns."""
    dates = frame["Date"]
    mask = (frame["Store"] == store) & (dates >= pd.Timestamp(first)) & (dates <= pd.Timestamp(last))
    rows = frame.loc[mask, ["Date", "Sales"]].sort_values("Date")
    return [(pd.Timestamp(d).date(), float(s)) for d, s in zip(rows["Date"], rows["Sales"], strict=True)]


def unavailable(version: str, source: str) -> str:
    """The panel's message when the data behind a version cannot be read here."""
    if not source:
        return f"actual sales: v{version} has no {SOURCE_TAG} tag, so the data behind it is unknown"
    return f"actual sales: the data behind v{version} ({source}) is not on this machine"


def load_sales(source: str) -> pd.DataFrame:
    """Store, Date and Sales of the data `source` names, sorted; ActualsUnavailable when it cannot be
    rebuilt here. Slow (generating or reading the CSVs): the app caches it per source."""
    from model.data import read_sales
    from pipelines.train import rebuild_source

    if source.startswith("dir:") and Path(source[4:]).is_dir():
        # Only the three columns the page reads, unvalidated: Kaggle's train.csv in 0.5 s, not 7.6 s.
        frame = read_sales(Path(source[4:]))
    else:
        raw = rebuild_source(source)
        if raw is None:
            raise ActualsUnavailable(source)
        frame = raw.train[["Store", "Date", "Sales"]]
    return frame.sort_values(["Store", "Date"], ignore_index=True)


def source_of(tracking_uri: str, model: str, version: str, client: Any = None) -> str:
    """The version's data.source tag ("" when it has none)."""
    if client is None:
        from pipelines.console.health import mlflow_client

        client = mlflow_client(tracking_uri)
    return str(client.get_model_version(model, version).tags.get(SOURCE_TAG, ""))


def gather_actuals(
    tracking_uri: str, forecast: Forecast, load: Callable[[str], pd.DataFrame], client: Any = None
) -> Actuals:
    """The store's actual sales around the forecast, from the data of the version that answered it."""
    query, version = forecast.query, forecast.model_version
    if not version:
        return Actuals("", "", error="actual sales: the endpoint did not say which version answered")
    try:
        source = source_of(tracking_uri, query.model, version, client)
    except Exception as exc:  # MLflow's client raises its own and requests' exceptions
        return Actuals(
            version, "", error=f"actual sales: MLflow at {tracking_uri} did not answer: {type(exc).__name__}"
        )
    try:
        frame = load(source)
    except ActualsUnavailable:
        return Actuals(version, source, error=unavailable(version, source))
    except Exception as exc:  # the folder is there but its CSVs are not valid Rossmann data
        return Actuals(
            version, source, error=f"actual sales: the data behind v{version} ({source}) could not be read: {exc}"
        )
    last_day = pd.Timestamp(frame["Date"].max()).date()
    first, last = window(query.start, query.end, last_day)
    got = store_days(frame, query.store, first, last)
    if not got:
        where = "" if (frame["Store"] == query.store).any() else f" (store {query.store} is not in it)"
        return Actuals(
            version,
            source,
            last_day=last_day,
            error=f"actual sales: the data behind v{version} ({source}) has no days for store {query.store} "
            f"between {first} and {last}{where}",
        )
    return Actuals(version, source, [d for d, _ in got], [v for _, v in got], last_day)


def table_rows(forecast: Forecast, actuals: Actuals | None) -> list[Row]:
    """The table's lines by day: the actual days before the forecast, then the forecast days with the
    actual sales where the data covers them."""
    actual = dict(zip(actuals.days, actuals.values, strict=True)) if actuals is not None and not actuals.error else {}
    predicted = dict(zip(forecast.days, forecast.values, strict=True))
    return [Row(d, actual.get(d), predicted.get(d)) for d in sorted(actual.keys() | predicted.keys())]
