"""Features for the Rossmann forecaster.

Every feature is computable from one input row (Kaggle's test.csv columns) plus the store table
bundled with the model, so training and serving share this one code path. Store-level statistics
come from the training window only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.calendar import STATES, holiday_distances, infer_states
from model.errors import InvalidInputError
from model.schema import ASSORTMENTS, INPUT_COLUMNS, STATE_HOLIDAYS, STORE_TYPES

FEATURES: list[str] = [
    "Store",
    "DayOfWeek",
    "Promo",
    "StateHoliday",
    "SchoolHoliday",
    "Year",
    "Month",
    "Day",
    "WeekOfYear",
    "DayOfYear",
    "StoreType",
    "Assortment",
    "CompetitionDistance",
    "CompetitionOpenMonths",
    "Promo2Active",
    "Promo2Weeks",
    "IsPromo2Month",
    "StoreMeanLogSales",
    "StoreStdLogSales",
    "StoreMeanLogCustomers",
    "StoreSalesPerCustomer",
    "StoreDowMeanLogSales",
    "StorePromoLift",
    "StoreMonthMeanLogSales",
    "StoreOpenDaysShare",
    "StoreRecentMeanLogSales",
    "StoreRecentDowMeanLogSales",
    "State",
    "DaysToHoliday",
    "DaysSinceHoliday",
]

RECENT_DAYS = 91  # "recent" store level: the last quarter of the training window

_MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec"]


def _open_with_sales(train: pd.DataFrame) -> pd.DataFrame:
    return train[(train["Open"] == 1) & (train["Sales"] > 0)]


def build_store_table(store: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Store attributes plus statistics of the training window, one row per store, indexed by Store."""
    sold = _open_with_sales(train).assign(
        LogSales=lambda d: np.log1p(d["Sales"]), LogCustomers=lambda d: np.log1p(d["Customers"])
    )
    g = sold.groupby("Store")
    stats = pd.DataFrame(
        {
            "StoreMeanLogSales": g["LogSales"].mean(),
            "StoreStdLogSales": g["LogSales"].std().fillna(0.0),
            "StoreMeanLogCustomers": g["LogCustomers"].mean(),
            "StoreSalesPerCustomer": g["Sales"].sum() / g["Customers"].sum().clip(lower=1),
        }
    )
    stats["StoreOpenDaysShare"] = train.groupby("Store")["Open"].mean()
    dow = sold.pivot_table(index="Store", columns="DayOfWeek", values="LogSales", aggfunc="mean")
    for d in range(1, 8):
        col = dow[d] if d in dow.columns else pd.Series(np.nan, index=stats.index)
        stats[f"DowMean{d}"] = col.reindex(stats.index).fillna(stats["StoreMeanLogSales"])
    month = sold.pivot_table(index="Store", columns=sold["Date"].dt.month, values="LogSales", aggfunc="mean")
    for m in range(1, 13):
        col = month[m] if m in month.columns else pd.Series(np.nan, index=stats.index)
        stats[f"MonthMean{m}"] = col.reindex(stats.index).fillna(stats["StoreMeanLogSales"])
    promo = sold.pivot_table(index="Store", columns="Promo", values="LogSales", aggfunc="mean")
    lift = promo.get(1, pd.Series(np.nan, index=promo.index)) - promo.get(0, pd.Series(np.nan, index=promo.index))
    stats["StorePromoLift"] = lift.reindex(stats.index).fillna(0.0)

    recent = sold[sold["Date"] > sold["Date"].max() - pd.Timedelta(days=RECENT_DAYS)]
    stats["StoreRecentMeanLogSales"] = (
        recent.groupby("Store")["LogSales"].mean().reindex(stats.index).fillna(stats["StoreMeanLogSales"])
    )
    recent_dow = recent.pivot_table(index="Store", columns="DayOfWeek", values="LogSales", aggfunc="mean")
    for d in range(1, 8):
        col = recent_dow[d] if d in recent_dow.columns else pd.Series(np.nan, index=stats.index)
        stats[f"RecentDowMean{d}"] = col.reindex(stats.index).fillna(stats[f"DowMean{d}"])

    table = store.set_index("Store").join(stats, how="left")
    table["State"] = infer_states(train).reindex(table.index).fillna(STATES[0])
    # Stores with no sold days in the window (all closed) still get a row: fall back to global means.
    return table.fillna({c: stats[c].mean() for c in stats.columns if c != "State"})


def coerce_input(frame: pd.DataFrame, known_stores: pd.Index) -> pd.DataFrame:
    """Check and type a request table (Kaggle test.csv columns); errors name the column."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(missing[0], f"required input missing (expected columns {INPUT_COLUMNS})")
    out = pd.DataFrame(index=frame.index)
    for col in ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday"):
        values = pd.to_numeric(frame[col], errors="coerce")
        if col == "Open":
            values = values.fillna(1)  # Kaggle's test.csv leaves Open blank for a few days: treat as open
        bad = values.isna() | ~np.isfinite(values) | (values != values.round())
        if bad.any():
            raise InvalidInputError(col, f"expected integers, got {frame.loc[bad, col].iloc[0]!r}")
        out[col] = values.astype("int64")
    for col, allowed in (
        ("DayOfWeek", range(1, 8)),
        ("Open", (0, 1)),
        ("Promo", (0, 1)),
        ("SchoolHoliday", (0, 1)),
    ):
        bad = ~out[col].isin(list(allowed))
        if bad.any():
            raise InvalidInputError(col, f"expected one of {list(allowed)}, got {out.loc[bad, col].iloc[0]}")
    unknown = ~out["Store"].isin(known_stores)
    if unknown.any():
        raise InvalidInputError(
            "Store",
            f"unknown store {out.loc[unknown, 'Store'].iloc[0]} (this model knows stores "
            f"{known_stores.min()}..{known_stores.max()}, {len(known_stores)} in all)",
        )
    dates = frame["Date"]
    parsed = (
        dates
        if pd.api.types.is_datetime64_any_dtype(dates)
        else pd.to_datetime(dates.astype(str).str.strip(), format="%Y-%m-%d", errors="coerce")
    )
    if parsed.isna().any():
        raise InvalidInputError("Date", f"expected a YYYY-MM-DD date, got {dates[parsed.isna()].iloc[0]!r}")
    out["Date"] = parsed
    holiday = frame["StateHoliday"].astype(str).str.strip().replace({"0.0": "0"})
    bad = ~holiday.isin(STATE_HOLIDAYS)
    if bad.any():
        raise InvalidInputError("StateHoliday", f"expected one of {list(STATE_HOLIDAYS)}, got {holiday[bad].iloc[0]!r}")
    out["StateHoliday"] = holiday
    return out[INPUT_COLUMNS]


def make_features(rows: pd.DataFrame, store_table: pd.DataFrame) -> pd.DataFrame:
    """Feature matrix (columns FEATURES, float32) for typed input rows (see coerce_input)."""
    date = rows["Date"]
    st = store_table.reindex(rows["Store"].to_numpy())
    idx = np.arange(len(rows))
    f = pd.DataFrame(index=rows.index)
    f["Store"] = rows["Store"].to_numpy()
    f["DayOfWeek"] = rows["DayOfWeek"].to_numpy()
    f["Promo"] = rows["Promo"].to_numpy()
    f["StateHoliday"] = rows["StateHoliday"].map({h: i for i, h in enumerate(STATE_HOLIDAYS)}).to_numpy()
    f["SchoolHoliday"] = rows["SchoolHoliday"].to_numpy()
    f["Year"] = date.dt.year.to_numpy()
    f["Month"] = date.dt.month.to_numpy()
    f["Day"] = date.dt.day.to_numpy()
    f["WeekOfYear"] = date.dt.isocalendar().week.astype("int64").to_numpy()
    f["DayOfYear"] = date.dt.dayofyear.to_numpy()
    f["StoreType"] = st["StoreType"].map({t: i for i, t in enumerate(STORE_TYPES)}).to_numpy()
    f["Assortment"] = st["Assortment"].map({a: i for i, a in enumerate(ASSORTMENTS)}).to_numpy()
    f["CompetitionDistance"] = st["CompetitionDistance"].fillna(1e5).to_numpy()
    comp_months = (f["Year"] - st["CompetitionOpenSinceYear"].to_numpy()) * 12 + (
        f["Month"] - st["CompetitionOpenSinceMonth"].to_numpy()
    )
    # Unknown opening date: treat as long-established competition, the common case in Kaggle's data.
    f["CompetitionOpenMonths"] = np.where(np.isnan(comp_months), 240, np.clip(comp_months, -24, 240))
    p2_start_weeks = st["Promo2SinceYear"].to_numpy() * 52 + st["Promo2SinceWeek"].to_numpy()
    weeks_now = f["Year"].to_numpy() * 52 + f["WeekOfYear"].to_numpy()
    p2_weeks = np.where(st["Promo2"].to_numpy() == 1, weeks_now - p2_start_weeks, np.nan)
    f["Promo2Active"] = (np.nan_to_num(p2_weeks, nan=-1) >= 0).astype("int64")
    f["Promo2Weeks"] = np.where(f["Promo2Active"] == 1, np.clip(p2_weeks, 0, 300), -1)
    month_abbr = np.array(_MONTH_ABBR)[f["Month"].to_numpy() - 1]
    intervals = st["PromoInterval"].fillna("").astype(str).to_numpy()
    in_interval = np.array([m in iv.split(",") for m, iv in zip(month_abbr, intervals, strict=True)], dtype=bool)
    f["IsPromo2Month"] = (in_interval & (f["Promo2Active"].to_numpy() == 1)).astype("int64")
    for col in (
        "StoreMeanLogSales",
        "StoreStdLogSales",
        "StoreMeanLogCustomers",
        "StoreSalesPerCustomer",
        "StorePromoLift",
        "StoreOpenDaysShare",
    ):
        f[col] = st[col].to_numpy()
    dow_cols = st[[f"DowMean{d}" for d in range(1, 8)]].to_numpy()
    f["StoreDowMeanLogSales"] = dow_cols[idx, f["DayOfWeek"].to_numpy() - 1]
    recent_dow_cols = st[[f"RecentDowMean{d}" for d in range(1, 8)]].to_numpy()
    f["StoreRecentDowMeanLogSales"] = recent_dow_cols[idx, f["DayOfWeek"].to_numpy() - 1]
    f["StoreRecentMeanLogSales"] = st["StoreRecentMeanLogSales"].to_numpy()
    states = st["State"].to_numpy()
    f["State"] = pd.Series(states).map({s: i for i, s in enumerate(STATES)}).to_numpy()
    f["DaysToHoliday"], f["DaysSinceHoliday"] = holiday_distances(date.reset_index(drop=True), states)
    month_cols = st[[f"MonthMean{m}" for m in range(1, 13)]].to_numpy()
    f["StoreMonthMeanLogSales"] = month_cols[idx, f["Month"].to_numpy() - 1]
    return f[FEATURES].astype("float32")
