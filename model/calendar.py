"""Public-holiday calendar per store.

Sales spike before a public holiday and dip after it, so the model needs "days to the next holiday",
which a request row (one day) cannot tell. Kaggle's data does not say which German state a store is
in, but each store's StateHoliday flags do: we pick the state whose calendar (from the `holidays`
package) matches the store's observed holidays best, and bundle that state with the model.
"""

from __future__ import annotations

import functools

import holidays
import numpy as np
import pandas as pd

STATES: tuple[str, ...] = tuple(s for s in holidays.Germany.subdivisions if len(s) == 2)
HORIZON_DAYS = 15  # distances are clipped here: beyond two weeks a holiday no longer moves sales


def state_holiday_dates(state: str, years: range) -> np.ndarray:
    """Sorted public-holiday dates (datetime64[D]) of a German state."""
    return _holiday_dates(state, years.start, years.stop)


@functools.lru_cache(maxsize=256)
def _holiday_dates(state: str, first_year: int, stop_year: int) -> np.ndarray:
    # Cached: building a holidays calendar costs milliseconds, and serving asks for it per request.
    days = holidays.Germany(subdiv=state, years=list(range(first_year, stop_year)))
    out = np.array(sorted(days.keys()), dtype="datetime64[D]")
    out.flags.writeable = False
    return out


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
    for j, state in enumerate(STATES):
        cal = state_holiday_dates(state, years)
        cal = cal[(cal >= np.datetime64(first.date())) & (cal <= np.datetime64(last.date()))]
        in_cal = np.isin(observed["Date"].to_numpy().astype("datetime64[D]"), cal)
        hits = observed.loc[in_cal].groupby("Store").size().reindex(all_stores, fill_value=0).to_numpy()
        # Stores missing days (Kaggle has a half-year gap for 180 stores) see fewer calendar days.
        seen = train.assign(in_cal=np.isin(train["Date"].to_numpy().astype("datetime64[D]"), cal))
        cal_seen = seen.groupby("Store")["in_cal"].sum().reindex(all_stores, fill_value=0).to_numpy()
        scores[:, j] = 2 * hits / np.maximum(obs_count + cal_seen, 1)
    return pd.Series(np.array(STATES)[scores.argmax(axis=1)], index=pd.Index(all_stores, name="Store"), name="State")


def holiday_distances(dates: pd.Series | np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(days until the next public holiday, days since the last one) for each row, clipped."""
    d = np.asarray(dates).astype("datetime64[D]")
    to_next = np.full(len(d), HORIZON_DAYS, dtype="int64")
    since_last = np.full(len(d), HORIZON_DAYS, dtype="int64")
    if len(d) == 0:
        return to_next, since_last
    lo, hi = pd.Timestamp(d.min()), pd.Timestamp(d.max())
    years = range(lo.year - 1, hi.year + 2)
    for state in np.unique(states):
        mask = states == state
        cal = state_holiday_dates(str(state), years).astype("int64")
        x = d[mask].astype("int64")
        i = np.searchsorted(cal, x, side="left")  # first holiday >= day
        nxt = np.where(i < len(cal), cal[np.minimum(i, len(cal) - 1)] - x, HORIZON_DAYS)
        j = np.searchsorted(cal, x, side="right") - 1  # last holiday <= day
        prev = np.where(j >= 0, x - cal[np.maximum(j, 0)], HORIZON_DAYS)
        to_next[mask] = np.clip(nxt, 0, HORIZON_DAYS)
        since_last[mask] = np.clip(prev, 0, HORIZON_DAYS)
    return to_next, since_last
