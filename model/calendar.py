"""Public-holiday calendar per store, precomputed per state and day.

Sales spike before a public holiday and dip after it, so the model needs "days to the next holiday",
which a request row (one day) cannot tell. Kaggle's data does not say which German state a store is
in, but each store's StateHoliday flags do: we pick the state whose calendar (from the `holidays`
package) matches the store's observed holidays best, and bundle that state with the model.

The distances are precomputed once, at training, for every state and every day of the range the
model serves (`CalendarTable`), and travel with the model: a request then costs two array lookups,
and a date outside the range is a clear input error rather than an out-of-bounds index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import holidays
import numpy as np
import pandas as pd

from model.errors import InvalidInputError

STATES: tuple[str, ...] = tuple(s for s in holidays.Germany.subdivisions if len(s) == 2)
HORIZON_DAYS = 15  # distances are clipped here: beyond two weeks a holiday no longer moves sales
# The range a model serves, around its training data: a year before it (backcasts, gate windows)
# and five after (forecasts). The `holidays` package knows German holidays from 1991 on.
YEARS_BEFORE, YEARS_AFTER = 1, 5
FIRST_CALENDAR_YEAR = 1991

# Per-day calendar columns (same for every state), in this order.
DAY_COLUMNS = ("Year", "Month", "Day", "WeekOfYear", "DayOfYear")


def state_holiday_dates(state: str, years: range) -> np.ndarray:
    """Sorted public-holiday dates (datetime64[D]) of a German state."""
    days = holidays.Germany(subdiv=state, years=list(years))
    return np.array(sorted(days.keys()), dtype="datetime64[D]")


def holiday_type(state: str, years: range) -> dict[np.datetime64, str]:
    """Kaggle's StateHoliday codes: b = Easter, c = Christmas, a = any other public holiday."""
    out: dict[np.datetime64, str] = {}
    for day, name in holidays.Germany(subdiv=state, years=list(years)).items():
        lname = name.lower()
        code = "c" if "christmas" in lname else "b" if ("easter" in lname or "good friday" in lname) else "a"
        out[np.datetime64(day, "D")] = code
    return out


def infer_states(train: pd.DataFrame) -> pd.Series:
    """Most likely German state of each store, by F1 match of its StateHoliday dates to each calendar."""
    first, last = train["Date"].min(), train["Date"].max()
    years = range(first.year, last.year + 1)
    observed = train.loc[train["StateHoliday"] != "0", ["Store", "Date"]]
    all_stores = np.sort(train["Store"].unique())
    scores = np.zeros((len(all_stores), len(STATES)))
    obs_count = observed.groupby("Store").size().reindex(all_stores, fill_value=0).to_numpy()
    train_days = train["Date"].to_numpy().astype("datetime64[D]")
    observed_days = observed["Date"].to_numpy().astype("datetime64[D]")
    for j, state in enumerate(STATES):
        cal = state_holiday_dates(state, years)
        cal = cal[(cal >= np.datetime64(first.date())) & (cal <= np.datetime64(last.date()))]
        in_cal = np.isin(observed_days, cal)
        hits = observed.loc[in_cal].groupby("Store").size().reindex(all_stores, fill_value=0).to_numpy()
        # Stores missing days (Kaggle has a half-year gap for 180 stores) see fewer calendar days.
        seen = pd.Series(np.isin(train_days, cal), index=train.index).groupby(train["Store"]).sum()
        cal_seen = seen.reindex(all_stores, fill_value=0).to_numpy()
        scores[:, j] = 2 * hits / np.maximum(obs_count + cal_seen, 1)
    return pd.Series(np.array(STATES)[scores.argmax(axis=1)], index=pd.Index(all_stores, name="Store"), name="State")


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


def _distances(cal: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(days until the next date in `cal`, days since the last one), clipped to HORIZON_DAYS."""
    c, x = cal.astype("int64"), days.astype("int64")
    if len(c) == 0:
        full = np.full(len(x), HORIZON_DAYS, dtype="int64")
        return full, full.copy()
    i = np.searchsorted(c, x, side="left")  # first holiday >= day
    nxt = np.where(i < len(c), c[np.minimum(i, len(c) - 1)] - x, HORIZON_DAYS)
    j = np.searchsorted(c, x, side="right") - 1  # last holiday <= day
    prev = np.where(j >= 0, x - c[np.maximum(j, 0)], HORIZON_DAYS)
    return np.clip(nxt, 0, HORIZON_DAYS), np.clip(prev, 0, HORIZON_DAYS)


@dataclass(frozen=True)
class CalendarTable:
    """Calendar features for every (state, day) of the range a model serves.

    `first_day` is a datetime64[D]; row d of `day_features` (columns DAY_COLUMNS) and column d of
    the per-state arrays describe `first_day + d`.
    """

    first_day: np.datetime64
    states: tuple[str, ...]
    day_features: np.ndarray  # int16 [days, len(DAY_COLUMNS)]
    days_to_holiday: np.ndarray  # int8 [states, days]
    days_since_holiday: np.ndarray  # int8 [states, days]

    @property
    def last_day(self) -> np.datetime64:
        return self.first_day + np.timedelta64(self.day_features.shape[0] - 1, "D")

    def day_index(self, days: np.ndarray) -> np.ndarray:
        """Row of each datetime64[D] in the table; a date outside the range is an error naming Date."""
        idx = (days - self.first_day).astype("int64")
        bad = (idx < 0) | (idx >= self.day_features.shape[0])
        if bad.any():
            raise InvalidInputError(
                "Date",
                f"{days[bad][0]} is outside the dates this model serves ({self.first_day}..{self.last_day}: "
                f"from {YEARS_BEFORE} year before its training data to {YEARS_AFTER} after)",
            )
        return idx

    def state_index(self, states: np.ndarray) -> np.ndarray:
        lookup = {s: i for i, s in enumerate(self.states)}
        return np.array([lookup[str(s)] for s in states], dtype="int64")

    def save(self, path: Path) -> None:
        np.savez(
            path,
            first_day=np.array([self.first_day], dtype="datetime64[D]"),
            states=np.array(self.states),
            day_features=self.day_features,
            days_to_holiday=self.days_to_holiday,
            days_since_holiday=self.days_since_holiday,
        )

    @classmethod
    def load(cls, path: Path | str) -> CalendarTable:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                first_day=z["first_day"][0],
                states=tuple(str(s) for s in z["states"]),
                day_features=z["day_features"],
                days_to_holiday=z["days_to_holiday"],
                days_since_holiday=z["days_since_holiday"],
            )


def serving_years(first: pd.Timestamp, last: pd.Timestamp) -> range:
    """The calendar years a model trained on data from `first` to `last` serves."""
    return range(max(FIRST_CALENDAR_YEAR, first.year - YEARS_BEFORE), last.year + YEARS_AFTER + 1)


def build_calendar(states: list[str] | tuple[str, ...], years: range) -> CalendarTable:
    """Precompute the calendar for `states` over whole `years` (neighbouring years count for distances)."""
    first, last = np.datetime64(f"{years.start}-01-01", "D"), np.datetime64(f"{years.stop - 1}-12-31", "D")
    days = np.arange(first, last + np.timedelta64(1, "D"))
    months = days.astype("datetime64[M]")
    year_start = days.astype("datetime64[Y]")
    day_features = np.column_stack(
        [
            year_start.astype("int64") + 1970,
            months.astype("int64") % 12 + 1,
            (days - months.astype("datetime64[D]")).astype("int64") + 1,
            iso_week(days),
            (days - year_start.astype("datetime64[D]")).astype("int64") + 1,
        ]
    ).astype("int16")
    uniq = tuple(sorted(set(states)))
    to_next = np.empty((len(uniq), len(days)), dtype="int8")
    since = np.empty((len(uniq), len(days)), dtype="int8")
    for i, state in enumerate(uniq):
        cal = state_holiday_dates(state, range(years.start - 1, years.stop + 1))
        to_next[i], since[i] = _distances(cal, days)
    return CalendarTable(first, uniq, day_features, to_next, since)
