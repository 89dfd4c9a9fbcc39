"""Realized accuracy: logged predictions joined to actual sales, RMSPE per version and per day.

No I/O here. Rossmann's metric: RMSPE over store-days with Sales > 0 (closed days and open days
without sales are left out). A store-day predicted several times by one version (a client that
asked twice) counts once, with the latest logged prediction. `common` is each version's RMSPE on the
store-days every version predicted: the like-for-like figure when a canary and the stable version
served side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from model.metrics import rmspe

ACTUAL_COLUMNS = ("Store", "Date", "Sales")


class ActualsError(ValueError):
    """Actuals that cannot be used; the message names the column and the fix."""


@dataclass(frozen=True)
class Realized:
    per_version: pd.DataFrame  # version, rmspe, rows, days, first_day, last_day, common_rmspe, common_rows
    per_day: pd.DataFrame  # version, Date, rmspe, rows
    joined_rows: int  # logged store-days with an actual, Sales > 0


def clean_actuals(frame: pd.DataFrame) -> pd.DataFrame:
    """Store (int), Date (YYYY-MM-DD), Sales (float): one row per store-day."""
    missing = [c for c in ACTUAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ActualsError(f"actuals: no column {missing}; expected a CSV with columns Store, Date, Sales")
    out = frame[list(ACTUAL_COLUMNS)].copy()
    for column in ("Store", "Sales"):
        values = pd.to_numeric(out[column], errors="coerce")
        if values.isna().any():
            bad = out.loc[values.isna(), column].iloc[0]
            raise ActualsError(f"actuals: {column} {bad!r} is not a number")
        out[column] = values
    dates = pd.to_datetime(out["Date"], format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        raise ActualsError(f"actuals: Date {out.loc[dates.isna(), 'Date'].iloc[0]!r} is not YYYY-MM-DD")
    out["Date"] = dates.dt.strftime("%Y-%m-%d")
    out["Store"] = out["Store"].astype("int64")
    out["Sales"] = out["Sales"].astype("float64")
    twice = out.duplicated(["Store", "Date"], keep=False)
    if twice.any():
        store, day = out.loc[twice, ["Store", "Date"]].iloc[0]
        raise ActualsError(f"actuals: store {store} on {day} is given more than once")
    return out.reset_index(drop=True)


def latest_predictions(log: pd.DataFrame) -> pd.DataFrame:
    """version, Store, Date, prediction: the latest logged prediction per version and store-day."""
    needed = ["version", "Store", "Date", "prediction", "received_at"]
    frame = log[[c for c in needed if c in log.columns]]
    if len(frame.columns) < len(needed):
        return pd.DataFrame(columns=needed[:-1])
    frame = frame.dropna(subset=["Store", "Date", "prediction"])
    frame = frame[frame["version"] != ""].copy()
    frame["Store"] = frame["Store"].astype("int64")
    frame["Date"] = frame["Date"].astype(str)
    frame = frame.sort_values("received_at", kind="stable").drop_duplicates(["version", "Store", "Date"], keep="last")
    return frame[needed[:-1]].reset_index(drop=True)


def _rmspe(group: pd.DataFrame) -> float:
    return rmspe(group["Sales"].to_numpy(), group["prediction"].to_numpy())


def realized(log: pd.DataFrame, actuals: pd.DataFrame) -> Realized:
    """Join on Store and Date; RMSPE per version, per version and day, and on common store-days."""
    joined = latest_predictions(log).merge(actuals, on=["Store", "Date"], how="inner")
    joined = joined[joined["Sales"] > 0]
    if joined.empty:
        empty = pd.DataFrame(columns=["version", "rmspe", "rows"])
        return Realized(empty, empty.assign(Date=[]), 0)
    versions = sorted(joined["version"].unique(), key=lambda v: (len(v), v))
    per_version = pd.DataFrame(
        [
            {
                "version": v,
                "rmspe": _rmspe(g),
                "rows": len(g),
                "days": g["Date"].nunique(),
                "first_day": g["Date"].min(),
                "last_day": g["Date"].max(),
            }
            for v, g in ((v, joined[joined["version"] == v]) for v in versions)
        ]
    )
    shared = joined.groupby(["Store", "Date"])["version"].transform("nunique") == len(versions)
    common = joined[shared]
    per_version["common_rmspe"] = [
        _rmspe(common[common["version"] == v]) if shared.any() else float("nan") for v in versions
    ]
    per_version["common_rows"] = [int((common["version"] == v).sum()) for v in versions]
    per_day = pd.DataFrame(
        [
            {"version": v, "Date": d, "rmspe": _rmspe(g), "rows": len(g)}
            for (v, d), g in joined.groupby(["version", "Date"], sort=False)
        ]
    )
    per_day["order"] = per_day["version"].map({v: i for i, v in enumerate(versions)})
    per_day = per_day.sort_values(["order", "Date"]).drop(columns="order").reset_index(drop=True)
    return Realized(per_version, per_day, len(joined))
