"""Features for the Rossmann forecaster.

Every feature is computable from one input row (Kaggle's test.csv columns) plus what travels with
the model: the store table (attributes and statistics of the training data, none of it later than
the forecast origin) and the calendar table. Training and serving share this one code path
(`feature_matrix`), so a forecast cannot drift from what was trained.

The store table is turned once into numpy arrays (`FeatureTables`): a request is then a handful of
gathers, with no pandas on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.calendar import STATES, CalendarTable, build_calendar, infer_states, serving_years
from model.errors import InvalidInputError
from model.inputs import Requests
from model.recency import RECENCY_COLUMNS, block_origins, horizon, levels_at, make_grid
from model.schema import ASSORTMENTS, STORE_TYPES

# Store-level constants of the whole training data, copied per row from the store table (in this order).
STORE_COLUMNS: tuple[str, ...] = (
    "StoreMeanLogSales",
    "StoreStdLogSales",
    "StoreMeanLogCustomers",
    "StoreSalesPerCustomer",
    "StorePromoLift",
    "StoreOpenDaysShare",
    "StoreSchoolHolidayLift",
)

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
    *STORE_COLUMNS,
    *RECENCY_COLUMNS,
    "Horizon",
    "StoreDowMeanLogSales",
    "StoreMonthMeanLogSales",
    "StoreMonthEffect",
    "State",
    "DaysToHoliday",
    "DaysSinceHoliday",
    "DaysSinceReopen",
]

LONG_CLOSURE_DAYS = 14  # a store shut (or missing from the data) this long was refurbished
REOPEN_HORIZON = 120  # days since a reopening are clipped here; beyond it sales are back to normal
REOPENINGS_KEPT = 3  # the latest reopenings per store kept in the table (rows before them use older ones)

_MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec"]
_STORE_TYPE_CODES = {t: i for i, t in enumerate(STORE_TYPES)}
_ASSORTMENT_CODES = {a: i for i, a in enumerate(ASSORTMENTS)}
_STATE_CODES = {s: i for i, s in enumerate(STATES)}


def _open_with_sales(train: pd.DataFrame) -> pd.DataFrame:
    return train[(train["Open"] == 1) & (train["Sales"] > 0)]


def _per_store(values: pd.Series, index: pd.Index, fallback: pd.Series | float) -> pd.Series:
    return values.reindex(index).fillna(fallback)


def _pivot_mean(sold: pd.DataFrame, key: pd.Series, n: int, index: pd.Index, fallback: pd.Series) -> pd.DataFrame:
    """Mean log sales per store and key value 1..n (weekday, month), missing cells filled from `fallback`."""
    table = sold.groupby([sold["Store"], key])["LogSales"].mean().unstack()
    table = table.reindex(index=index, columns=range(1, n + 1))
    return table.apply(lambda col: col.fillna(fallback))


def reopenings(train: pd.DataFrame) -> pd.DataFrame:
    """(Store, Date) of each first open day after a long closure or a gap in the store's data."""
    opened = train.loc[train["Open"] == 1, ["Store", "Date"]].sort_values(["Store", "Date"])
    gap = opened.groupby("Store")["Date"].diff().dt.days
    return opened.loc[gap > LONG_CLOSURE_DAYS, ["Store", "Date"]].reset_index(drop=True)


def build_store_table(store: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Store attributes plus statistics of `train` (data up to the forecast origin), indexed by Store."""
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
    mean = stats["StoreMeanLogSales"]
    stats["StoreOpenDaysShare"] = train.groupby("Store")["Open"].mean()
    dow = _pivot_mean(sold, sold["DayOfWeek"], 7, stats.index, mean)
    month = _pivot_mean(sold, sold["Date"].dt.month, 12, stats.index, mean)
    promo = sold.groupby(["Store", "Promo"])["LogSales"].mean().unstack()
    lift = promo.get(1, pd.Series(np.nan, index=promo.index)) - promo.get(0, pd.Series(np.nan, index=promo.index))
    stats["StorePromoLift"] = _per_store(lift, stats.index, 0.0)

    # School holidays lift some stores (tourist areas) and empty others (cities); December's
    # Christmas break is left out, its run-up would swamp the effect.
    no_dec = sold[sold["Date"].dt.month != 12]
    by_sh = no_dec.groupby(["Store", "SchoolHoliday"])["LogSales"].mean().unstack()
    sh_lift = by_sh.get(1, pd.Series(np.nan, index=by_sh.index)) - by_sh.get(0, pd.Series(np.nan, index=by_sh.index))
    stats["StoreSchoolHolidayLift"] = _per_store(sh_lift, stats.index, 0.0)

    for d in range(1, 8):
        stats[f"DowMean{d}"] = dow[d]
    for m in range(1, 13):
        stats[f"MonthMean{m}"] = month[m]

    events = reopenings(train)
    latest = events.groupby("Store").tail(REOPENINGS_KEPT).assign(k=lambda e: e.groupby("Store").cumcount())
    wide = latest.pivot(index="Store", columns="k", values="Date").reindex(stats.index)
    for k in range(REOPENINGS_KEPT):
        stats[f"Reopen{k + 1}"] = wide[k] if k in wide.columns else pd.NaT

    table = store.set_index("Store").join(stats, how="left")
    table["State"] = infer_states(train).reindex(table.index).fillna(STATES[0])
    # Stores with no sold days in the window (all closed) still get a row: fall back to global means.
    numeric = [c for c in stats.columns if not c.startswith("Reopen")]
    table = table.fillna({c: stats[c].mean() for c in numeric})
    # Levels as of the origin, the day after the data (NaN where a store has no recent sales: the
    # booster has a branch for missing values, learnt from training rows in the same situation).
    origin = np.datetime64(train["Date"].max().date(), "D") + np.timedelta64(1, "D")
    levels = store_levels(sold, table, np.array([origin]))[:, 0, :]
    for k, col in enumerate(RECENCY_COLUMNS):
        table[col] = levels[:, k]
    table["Origin"] = pd.Timestamp(origin)
    return table


def store_levels(sold: pd.DataFrame, table: pd.DataFrame, origins: np.ndarray) -> np.ndarray:
    """RECENCY_COLUMNS of every store in `table` at each origin: [stores, origins, columns]."""
    dow_mean = table[[f"DowMean{d}" for d in range(1, 8)]].to_numpy("float64")
    grid = make_grid(sold, table.index.to_numpy().astype("int64"), dow_mean)
    return levels_at(grid, origins)


def training_levels(train: pd.DataFrame, table: pd.DataFrame, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(levels [rows, columns], origins) for training rows: each as of its own 42-day block's origin."""
    sold = _open_with_sales(train).assign(LogSales=lambda d: np.log1p(d["Sales"]))
    days = rows["Date"].to_numpy().astype("datetime64[D]")
    origins = block_origins(days, np.datetime64(train["Date"].max().date(), "D"))
    unique, which = np.unique(origins, return_inverse=True)
    levels = store_levels(sold, table, unique)
    pos = table.index.get_indexer(rows["Store"].to_numpy())
    return levels[pos, which, :], origins


@dataclass(frozen=True)
class FeatureTables:
    """The store table and calendar as numpy arrays, indexed by a store's position.

    `position[store_id]` is the row of that store (-1 for an unknown id below `position`'s length).
    """

    store_ids: np.ndarray  # int64, sorted
    position: np.ndarray  # int64 [max store id + 1]
    store_type: np.ndarray  # float32 codes
    assortment: np.ndarray
    competition_distance: np.ndarray
    competition_open: np.ndarray  # float64 months since year 0 (NaN: unknown)
    promo2_start: np.ndarray  # float64 weeks since year 0 (NaN: no Promo2)
    promo2_months: np.ndarray  # bool [stores, 12]: Promo2 restarts in this month
    constants: np.ndarray  # float32 [stores, len(STORE_COLUMNS)]
    levels: np.ndarray  # float32 [stores, len(RECENCY_COLUMNS)]: as of the origin
    origin: np.datetime64  # the day after the training data: horizon 1
    dow: np.ndarray  # float32 [stores, 7]: mean log sales by weekday
    month: np.ndarray  # float32 [stores, 12]
    month_effect: np.ndarray  # float32 [stores, 12]: month mean minus the store's mean
    reopen: np.ndarray  # float64 [stores, REOPENINGS_KEPT] days since epoch (NaN: none)
    state: np.ndarray  # float32 state code (feature)
    state_row: np.ndarray  # int64 row in calendar's per-state arrays
    calendar: CalendarTable

    @classmethod
    def build(cls, store_table: pd.DataFrame, calendar: CalendarTable) -> FeatureTables:
        ids = store_table.index.to_numpy().astype("int64")
        position = np.full(int(ids.max()) + 1, -1, dtype="int64")
        position[ids] = np.arange(len(ids))
        t = store_table
        promo2 = t["Promo2"].to_numpy() == 1
        intervals = t["PromoInterval"].astype(str).to_numpy()
        months = np.array([[m in iv.split(",") for m in _MONTH_ABBR] for iv in intervals], dtype=bool)
        reopen_cols = [f"Reopen{k + 1}" for k in range(REOPENINGS_KEPT)]
        reopen = np.stack([pd.to_datetime(t[c]).to_numpy().astype("datetime64[D]") for c in reopen_cols], axis=1)
        return cls(
            store_ids=ids,
            position=position,
            store_type=t["StoreType"].map(_STORE_TYPE_CODES).to_numpy(dtype="float32"),
            assortment=t["Assortment"].map(_ASSORTMENT_CODES).to_numpy(dtype="float32"),
            # Unknown distance: as if there were no competitor nearby.
            competition_distance=t["CompetitionDistance"].fillna(1e5).to_numpy(dtype="float32"),
            competition_open=(t["CompetitionOpenSinceYear"] * 12 + t["CompetitionOpenSinceMonth"]).to_numpy("float64"),
            promo2_start=np.where(
                promo2, (t["Promo2SinceYear"] * 52 + t["Promo2SinceWeek"]).to_numpy("float64"), np.nan
            ),
            promo2_months=months & promo2[:, None],
            constants=t[list(STORE_COLUMNS)].to_numpy(dtype="float32"),
            levels=t[list(RECENCY_COLUMNS)].to_numpy(dtype="float32"),
            origin=np.datetime64(pd.Timestamp(t["Origin"].iloc[0]).date(), "D"),
            dow=t[[f"DowMean{d}" for d in range(1, 8)]].to_numpy(dtype="float32"),
            month=t[[f"MonthMean{m}" for m in range(1, 13)]].to_numpy(dtype="float32"),
            month_effect=(
                t[[f"MonthMean{m}" for m in range(1, 13)]].to_numpy("float32")
                - t["StoreMeanLogSales"].to_numpy("float32")[:, None]
            ),
            reopen=np.where(np.isnat(reopen), np.nan, reopen.astype("int64").astype("float64")),
            state=t["State"].map(_STATE_CODES).to_numpy(dtype="float32"),
            state_row=calendar.state_index(t["State"].to_numpy()),
            calendar=calendar,
        )

    def positions(self, stores: np.ndarray) -> np.ndarray:
        """Row of each store id; an unknown id is an error naming Store."""
        inside = (stores >= 0) & (stores < len(self.position))
        pos = np.where(inside, self.position[np.where(inside, stores, 0)], -1)
        if (pos < 0).any():
            raise InvalidInputError(
                "Store",
                f"unknown store {stores[pos < 0][0]} (this model knows stores "
                f"{self.store_ids.min()}..{self.store_ids.max()}, {len(self.store_ids)} in all)",
            )
        return pos


def calendar_for(store_table: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp) -> CalendarTable:
    """The calendar a model trained on data from `first` to `last` serves, for its stores' states."""
    return build_calendar(sorted(set(store_table["State"])), serving_years(first, last))


def feature_matrix(
    tables: FeatureTables, req: Requests, levels: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Features (columns in FEATURES order, float32) for validated requests.

    `levels`: (levels, origins) per row, for training rows (see training_levels); by default the
    store levels as of the model's origin, which is what a forecast uses.
    Written column by column into one preallocated array: the serving path calls this per request,
    and a one-row request must cost microseconds, not the milliseconds pandas would take.
    """
    pos = tables.positions(req.store)
    cal = tables.calendar
    d = cal.day_index(req.day)
    day = cal.day_features[d]
    year, month, week = day[:, 0].astype("float64"), day[:, 1].astype("int64"), day[:, 3].astype("float64")
    out = np.empty((len(pos), len(FEATURES)), dtype="float32")
    out[:, 0] = req.store
    out[:, 1] = req.day_of_week
    out[:, 2] = req.promo
    out[:, 3] = req.state_holiday
    out[:, 4] = req.school_holiday
    out[:, 5:10] = day
    out[:, 10] = tables.store_type[pos]
    out[:, 11] = tables.assortment[pos]
    out[:, 12] = tables.competition_distance[pos]
    comp_months = year * 12 + month - tables.competition_open[pos]
    # Unknown opening date: treat as long-established competition, the common case in Kaggle's data.
    out[:, 13] = np.where(np.isnan(comp_months), 240, np.clip(comp_months, -24, 240))
    p2_weeks = year * 52 + week - tables.promo2_start[pos]
    active = p2_weeks >= 0  # NaN (no Promo2) compares False
    out[:, 14] = active
    out[:, 15] = np.where(active, np.clip(p2_weeks, 0, 300), -1)
    out[:, 16] = tables.promo2_months[pos, month - 1] & active
    n = 17 + len(STORE_COLUMNS)
    out[:, 17:n] = tables.constants[pos]
    if levels is None:
        out[:, n : n + len(RECENCY_COLUMNS)] = tables.levels[pos]
        out[:, n + len(RECENCY_COLUMNS)] = horizon(req.day, tables.origin)
    else:
        out[:, n : n + len(RECENCY_COLUMNS)] = levels[0]
        out[:, n + len(RECENCY_COLUMNS)] = horizon(req.day, levels[1])
    n += len(RECENCY_COLUMNS) + 1
    out[:, n] = tables.dow[pos, req.day_of_week - 1]
    out[:, n + 1] = tables.month[pos, month - 1]
    out[:, n + 2] = tables.month_effect[pos, month - 1]
    out[:, n + 3] = tables.state[pos]
    row = tables.state_row[pos]
    out[:, n + 4] = cal.days_to_holiday[row, d]
    out[:, n + 5] = cal.days_since_holiday[row, d]
    # Days since the latest reopening on or before the day (NaN and later ones compare False).
    since = req.day.astype("int64")[:, None] - tables.reopen[pos]
    since = np.where(since >= 0, since, REOPEN_HORIZON).min(axis=1)
    out[:, n + 6] = np.minimum(since, REOPEN_HORIZON)
    return out
