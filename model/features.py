"""Features for the Rossmann forecaster.

Every feature is computable from one input row (Kaggle's test.csv columns) plus what travels with
the model: the store table (attributes and statistics of the training data, nothing later than
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
from model.schema import ASSORTMENTS, STORE_TYPES

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

RECENT_DAYS = 91  # "recent" store level: the last quarter before the origin

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
    promo = sold.groupby(["Store", "Promo"])["LogSales"].mean().unstack()
    lift = promo.get(1, pd.Series(np.nan, index=promo.index)) - promo.get(0, pd.Series(np.nan, index=promo.index))
    stats["StorePromoLift"] = _per_store(lift, stats.index, 0.0)
    recent = sold[sold["Date"] > sold["Date"].max() - pd.Timedelta(days=RECENT_DAYS)]
    stats["StoreRecentMeanLogSales"] = _per_store(recent.groupby("Store")["LogSales"].mean(), stats.index, mean)
    dow = _pivot_mean(sold, sold["DayOfWeek"], 7, stats.index, mean)
    recent_dow = _pivot_mean(recent, recent["DayOfWeek"], 7, stats.index, pd.Series(np.nan, index=stats.index))
    month = _pivot_mean(sold, sold["Date"].dt.month, 12, stats.index, mean)
    for d in range(1, 8):
        stats[f"DowMean{d}"] = dow[d]
        stats[f"RecentDowMean{d}"] = recent_dow[d].fillna(dow[d])
    for m in range(1, 13):
        stats[f"MonthMean{m}"] = month[m]

    table = store.set_index("Store").join(stats, how="left")
    table["State"] = infer_states(train).reindex(table.index).fillna(STATES[0])
    # Stores with no sold days in the window (all closed) still get a row: fall back to global means.
    return table.fillna({c: stats[c].mean() for c in stats.columns})


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
    stats: np.ndarray  # float32 [stores, 4]: mean, spread, customers, sales per customer
    dow: np.ndarray  # float32 [stores, 7, 2]: mean and recent mean log sales by weekday
    promo_lift: np.ndarray
    month: np.ndarray  # float32 [stores, 12]
    later_stats: np.ndarray  # float32 [stores, 2]: open days share, recent mean
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
        p2_start = (t["Promo2SinceYear"] * 52 + t["Promo2SinceWeek"]).to_numpy("float64")
        return cls(
            store_ids=ids,
            position=position,
            store_type=t["StoreType"].map(_STORE_TYPE_CODES).to_numpy(dtype="float32"),
            assortment=t["Assortment"].map(_ASSORTMENT_CODES).to_numpy(dtype="float32"),
            # Unknown distance: as if there were no competitor nearby.
            competition_distance=t["CompetitionDistance"].fillna(1e5).to_numpy(dtype="float32"),
            competition_open=(t["CompetitionOpenSinceYear"] * 12 + t["CompetitionOpenSinceMonth"]).to_numpy("float64"),
            promo2_start=np.where(promo2, p2_start, np.nan),
            promo2_months=months & promo2[:, None],
            stats=t[
                ["StoreMeanLogSales", "StoreStdLogSales", "StoreMeanLogCustomers", "StoreSalesPerCustomer"]
            ].to_numpy(dtype="float32"),
            dow=np.stack(
                [
                    t[[f"DowMean{d}" for d in range(1, 8)]].to_numpy(dtype="float32"),
                    t[[f"RecentDowMean{d}" for d in range(1, 8)]].to_numpy(dtype="float32"),
                ],
                axis=2,
            ),
            promo_lift=t["StorePromoLift"].to_numpy(dtype="float32"),
            month=t[[f"MonthMean{m}" for m in range(1, 13)]].to_numpy(dtype="float32"),
            later_stats=t[["StoreOpenDaysShare", "StoreRecentMeanLogSales"]].to_numpy(dtype="float32"),
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


def feature_matrix(tables: FeatureTables, req: Requests) -> np.ndarray:
    """Features (columns in FEATURES order, float32) for validated requests.

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
    out[:, 17:21] = tables.stats[pos]
    dow = tables.dow[pos, req.day_of_week - 1]
    out[:, 21] = dow[:, 0]
    out[:, 22] = tables.promo_lift[pos]
    out[:, 23] = tables.month[pos, month - 1]
    out[:, 24:26] = tables.later_stats[pos]
    out[:, 26] = dow[:, 1]
    out[:, 27] = tables.state[pos]
    row = tables.state_row[pos]
    out[:, 28] = cal.days_to_holiday[row, d]
    out[:, 29] = cal.days_since_holiday[row, d]
    return out
