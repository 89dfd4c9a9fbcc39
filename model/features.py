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


def _integers(frame: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64")
    if col == "Open":
        values = np.where(np.isnan(values), 1.0, values)  # Kaggle's test.csv leaves Open blank on a few days
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        raise InvalidInputError(col, f"expected integers, got {frame[col].to_numpy()[bad][0]!r}")
    return values.astype("int64")


_ALLOWED: dict[str, tuple[int, ...]] = {
    "DayOfWeek": tuple(range(1, 8)),
    "Open": (0, 1),
    "Promo": (0, 1),
    "SchoolHoliday": (0, 1),
}


def coerce_input(frame: pd.DataFrame, known_stores: pd.Index) -> pd.DataFrame:
    """Check and type a request table (Kaggle test.csv columns); errors name the column."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(missing[0], f"required input missing (expected columns {INPUT_COLUMNS})")
    cols: dict[str, np.ndarray] = {
        c: _integers(frame, c) for c in ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")
    }
    for col, allowed in _ALLOWED.items():
        bad = ~np.isin(cols[col], allowed)
        if bad.any():
            raise InvalidInputError(col, f"expected one of {list(allowed)}, got {cols[col][bad][0]}")
    unknown = known_stores.get_indexer(cols["Store"]) < 0
    if unknown.any():
        raise InvalidInputError(
            "Store",
            f"unknown store {cols['Store'][unknown][0]} (this model knows stores "
            f"{known_stores.min()}..{known_stores.max()}, {len(known_stores)} in all)",
        )
    dates = frame["Date"]
    parsed = (
        dates
        if pd.api.types.is_datetime64_any_dtype(dates)
        else pd.to_datetime(dates.astype(str).str.strip(), format="%Y-%m-%d", errors="coerce")
    )
    bad_date = parsed.isna().to_numpy()
    if bad_date.any():
        raise InvalidInputError("Date", f"expected a YYYY-MM-DD date, got {dates.to_numpy()[bad_date][0]!r}")
    holiday = np.array([str(h).strip() for h in frame["StateHoliday"].to_numpy()], dtype=object)
    holiday[holiday == "0.0"] = "0"
    bad = ~np.isin(holiday, STATE_HOLIDAYS)
    if bad.any():
        raise InvalidInputError("StateHoliday", f"expected one of {list(STATE_HOLIDAYS)}, got {holiday[bad][0]!r}")
    return pd.DataFrame(
        {
            "Store": cols["Store"],
            "DayOfWeek": cols["DayOfWeek"],
            "Date": parsed.to_numpy(),
            "Open": cols["Open"],
            "Promo": cols["Promo"],
            "StateHoliday": holiday,
            "SchoolHoliday": cols["SchoolHoliday"],
        },
        index=frame.index,
    )


def iso_week(days: np.ndarray) -> np.ndarray:
    """ISO-8601 week number of datetime64[D] values (what pandas' isocalendar() gives, without its cost)."""
    years = days.astype("datetime64[Y]")
    doy = (days - years).astype("int64") + 1
    weekday = (days.astype("int64") + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday = 1
    week = (doy - weekday + 10) // 7

    def weeks_in(year_start: np.ndarray) -> np.ndarray:
        jan1 = (year_start.astype("datetime64[D]").astype("int64") + 3) % 7 + 1
        y = year_start.astype("int64") + 1970
        leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
        return np.where((jan1 == 4) | (leap & (jan1 == 3)), 53, 52)

    late = np.where(week > weeks_in(years), 1, week)  # the last days of December in next year's week 1
    return np.where(week < 1, weeks_in(years - np.timedelta64(1, "Y")), late)


def _lookup(codes: dict[str, int], values: np.ndarray) -> np.ndarray:
    return np.array([codes.get(str(v), -1) for v in values], dtype="float64")


_STATE_HOLIDAY_CODES = {h: i for i, h in enumerate(STATE_HOLIDAYS)}
_STORE_TYPE_CODES = {t: i for i, t in enumerate(STORE_TYPES)}
_ASSORTMENT_CODES = {a: i for i, a in enumerate(ASSORTMENTS)}
_STATE_CODES = {s: i for i, s in enumerate(STATES)}
_STATS = (
    "StoreMeanLogSales",
    "StoreStdLogSales",
    "StoreMeanLogCustomers",
    "StoreSalesPerCustomer",
    "StorePromoLift",
    "StoreOpenDaysShare",
    "StoreRecentMeanLogSales",
)


def feature_matrix(rows: pd.DataFrame, store_table: pd.DataFrame) -> np.ndarray:
    """Features (columns in FEATURES order, float32) for typed input rows (see coerce_input).

    Built from numpy arrays and assembled once: the serving path calls this per request, and
    column-by-column pandas assignment cost ~10x the model itself at one row.
    """
    pos = store_table.index.get_indexer(rows["Store"].to_numpy())
    if (pos < 0).any():
        raise InvalidInputError("Store", f"unknown store {rows['Store'].to_numpy()[pos < 0][0]}")

    def st(col: str) -> np.ndarray:
        return store_table[col].to_numpy()[pos]

    days = rows["Date"].to_numpy().astype("datetime64[D]")
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    dow = rows["DayOfWeek"].to_numpy().astype("int64")
    f: dict[str, np.ndarray] = {
        "Store": rows["Store"].to_numpy(),
        "DayOfWeek": dow,
        "Promo": rows["Promo"].to_numpy(),
        "StateHoliday": _lookup(_STATE_HOLIDAY_CODES, rows["StateHoliday"].to_numpy()),
        "SchoolHoliday": rows["SchoolHoliday"].to_numpy(),
        "Year": years.astype("int64") + 1970,
        "Month": months.astype("int64") % 12 + 1,
        "Day": (days - months.astype("datetime64[D]")).astype("int64") + 1,
        "WeekOfYear": iso_week(days),
        "DayOfYear": (days - years.astype("datetime64[D]")).astype("int64") + 1,
        "StoreType": _lookup(_STORE_TYPE_CODES, st("StoreType")),
        "Assortment": _lookup(_ASSORTMENT_CODES, st("Assortment")),
        "CompetitionDistance": np.nan_to_num(st("CompetitionDistance").astype("float64"), nan=1e5),
    }
    comp_months = (f["Year"] - st("CompetitionOpenSinceYear")) * 12 + (f["Month"] - st("CompetitionOpenSinceMonth"))
    # Unknown opening date: treat as long-established competition, the common case in Kaggle's data.
    f["CompetitionOpenMonths"] = np.where(np.isnan(comp_months), 240, np.clip(comp_months, -24, 240))
    p2_start_weeks = st("Promo2SinceYear") * 52 + st("Promo2SinceWeek")
    p2_weeks = np.where(st("Promo2") == 1, f["Year"] * 52 + f["WeekOfYear"] - p2_start_weeks, np.nan)
    f["Promo2Active"] = (np.nan_to_num(p2_weeks, nan=-1) >= 0).astype("int64")
    f["Promo2Weeks"] = np.where(f["Promo2Active"] == 1, np.clip(p2_weeks, 0, 300), -1)
    month_abbr = np.array(_MONTH_ABBR)[f["Month"] - 1]
    intervals = st("PromoInterval")
    in_interval = np.array([m in str(iv).split(",") for m, iv in zip(month_abbr, intervals, strict=True)], dtype=bool)
    f["IsPromo2Month"] = (in_interval & (f["Promo2Active"] == 1)).astype("int64")
    for col in _STATS:
        f[col] = st(col)
    f["StoreDowMeanLogSales"] = store_table[[f"DowMean{d}" for d in range(1, 8)]].to_numpy()[pos, dow - 1]
    f["StoreRecentDowMeanLogSales"] = store_table[[f"RecentDowMean{d}" for d in range(1, 8)]].to_numpy()[pos, dow - 1]
    f["StoreMonthMeanLogSales"] = store_table[[f"MonthMean{m}" for m in range(1, 13)]].to_numpy()[pos, f["Month"] - 1]
    states = st("State")
    f["State"] = _lookup(_STATE_CODES, states)
    f["DaysToHoliday"], f["DaysSinceHoliday"] = holiday_distances(days, states)
    return np.column_stack([np.asarray(f[c], dtype="float32") for c in FEATURES])


def make_features(rows: pd.DataFrame, store_table: pd.DataFrame) -> pd.DataFrame:
    """feature_matrix as a DataFrame with named columns (for training and inspection)."""
    return pd.DataFrame(feature_matrix(rows, store_table), columns=FEATURES, index=rows.index)
