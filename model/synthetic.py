"""Generate Rossmann-format data: same schema as Kaggle's train.csv/store.csv, with the structure
that matters for forecasting (weekly and yearly seasonality, promos, holidays, closures, store types,
competition), so the whole pipeline runs without the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from dateutil.easter import easter

from model.calendar import holiday_type
from model.data import RawData, validate_raw
from model.schema import PROMO_INTERVALS

# Monday..Sunday multipliers; most stores close on Sunday (type b stores stay open).
_WEEKLY = np.array([1.18, 1.02, 0.97, 0.95, 1.0, 0.88, 0.7])
_STORE_TYPE_LEVEL = {"a": 1.0, "b": 1.6, "c": 1.05, "d": 0.95}


_STATES = ("NW", "BY", "BE", "HE", "SN", "BW")


def _state_holidays(dates: pd.DatetimeIndex, states: np.ndarray) -> np.ndarray:
    """(days, stores) grid of Kaggle StateHoliday codes from each store's real state calendar."""
    years = range(dates[0].year, dates[-1].year + 1)
    out = np.full((len(dates), len(states)), "0", dtype=object)
    day_index = {np.datetime64(d, "D"): i for i, d in enumerate(dates.date)}
    for state in np.unique(states):
        cols = np.flatnonzero(states == state)
        for day, code in holiday_type(str(state), years).items():
            if day in day_index:
                out[day_index[day], cols] = code
    return out


def _school_holidays(dates: pd.DatetimeIndex) -> np.ndarray:
    doy = dates.dayofyear.to_numpy()
    summer = (doy >= 196) & (doy < 238)
    christmas = (doy >= 357) | (doy <= 5)
    autumn = (doy >= 285) & (doy < 296)
    easter_break = np.zeros(len(dates), dtype=bool)
    for year in sorted(set(dates.year)):
        e = pd.Timestamp(easter(year))
        easter_break |= (dates >= e - pd.Timedelta(days=9)) & (dates <= e + pd.Timedelta(days=5))
    return (summer | christmas | autumn | easter_break).astype("int64")


def _stores(n: int, rng: np.random.Generator, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    store_type = rng.choice(list("abcd"), size=n, p=[0.54, 0.02, 0.13, 0.31])
    store_type[0] = "b" if n > 3 else store_type[0]  # at least one Sunday-open store
    assortment = np.where(store_type == "b", "b", rng.choice(list("ac"), size=n, p=[0.53, 0.47]))
    distance = np.round(np.exp(rng.normal(7.6, 1.2, size=n)) / 10) * 10
    distance[rng.random(n) < 0.01] = np.nan
    # Competition opening dates: some long ago, some inside the window (a visible sales drop).
    open_offsets = rng.integers(-3000, (end - start).days, size=n)
    opened = [start + pd.Timedelta(days=int(o)) for o in open_offsets]
    known = rng.random(n) < 0.7
    comp_month = np.where(known, [d.month for d in opened], np.nan)
    comp_year = np.where(known, [d.year for d in opened], np.nan)
    promo2 = (rng.random(n) < 0.5).astype("int64")
    p2_start = [start + pd.Timedelta(days=int(o)) for o in rng.integers(-1000, 300, size=n)]
    p2_week = np.where(promo2 == 1, [int(d.isocalendar().week) for d in p2_start], np.nan)
    p2_year = np.where(promo2 == 1, [d.year for d in p2_start], np.nan)
    interval = np.where(promo2 == 1, rng.choice(list(PROMO_INTERVALS[1:]), size=n), "")
    return pd.DataFrame(
        {
            "Store": np.arange(1, n + 1),
            "StoreType": store_type,
            "Assortment": assortment,
            "CompetitionDistance": distance,
            "CompetitionOpenSinceMonth": comp_month,
            "CompetitionOpenSinceYear": comp_year,
            "Promo2": promo2,
            "Promo2SinceWeek": p2_week,
            "Promo2SinceYear": p2_year,
            "PromoInterval": interval,
        }
    )


def generate_frames(
    stores: int = 60, days: int = 730, seed: int = 7, start: str = "2013-01-01"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaggle-shaped (train, store) frames, before validation."""
    if stores < 1 or days < 1:
        raise ValueError("stores and days must be positive")
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D")
    store = _stores(stores, rng, dates[0], dates[-1])

    n_d, n_s = len(dates), stores
    dow = dates.dayofweek.to_numpy()  # 0 = Monday
    doy = dates.dayofyear.to_numpy()
    store_states = rng.choice(_STATES, size=stores)
    state_h = _state_holidays(dates, store_states)
    is_holiday = state_h != "0"
    # Shoppers stock up the day before a public holiday and stay away the day after.
    before = np.zeros_like(is_holiday)
    before[:-1] = is_holiday[1:]
    after = np.zeros_like(is_holiday)
    after[1:] = is_holiday[:-1]
    school_h = _school_holidays(dates)
    # Kaggle's promos run Monday..Friday every other week.
    promo = (((dates.isocalendar().week.to_numpy() % 2) == 0) & (dow < 5)).astype("int64")
    yearly = 1 + 0.06 * np.sin(2 * np.pi * (doy - 80) / 365.25)
    december = np.where((dates.month == 12) & (dates.day <= 24), 1 + 0.35 * dates.day.to_numpy() / 24, 1.0)
    trend = 1 + 0.04 * np.arange(n_d) / 365.25

    # Grids are (days, stores).
    level = np.exp(rng.normal(np.log(6000), 0.35, size=n_s))
    level *= np.array([_STORE_TYPE_LEVEL[t] for t in store["StoreType"]])
    level *= np.where(store["Assortment"].to_numpy() == "c", 1.1, 1.0)
    promo_lift = rng.uniform(1.15, 1.35, size=n_s)
    sunday_open = store["StoreType"].to_numpy() == "b"

    comp_date = pd.to_datetime(
        {
            "year": store["CompetitionOpenSinceYear"].fillna(1900).astype(int),
            "month": store["CompetitionOpenSinceMonth"].fillna(1).astype(int),
            "day": 1,
        }
    ).to_numpy()
    comp_active = dates.to_numpy()[:, None] >= comp_date[None, :]
    dist = store["CompetitionDistance"].fillna(1e5).to_numpy()
    comp_effect = np.where(comp_active, 1 - 0.12 * np.exp(-dist / 2000)[None, :], 1.0)

    months = dates.strftime("%b").str.replace("Sep", "Sept").to_numpy()
    intervals = store["PromoInterval"].to_numpy()
    promo2_month = np.array([[m in str(iv).split(",") for iv in intervals] for m in months])
    promo2_effect = np.where(promo2_month, 1.03, 1.0)

    open_ = np.ones((n_d, n_s), dtype="int64")
    open_[dow == 6, :] = 0
    open_[np.ix_(dow == 6, sunday_open)] = 1
    open_[is_holiday & (rng.random((n_d, n_s)) < 0.95)] = 0
    # Refurbishment: a few stores close for 2-5 weeks, then sell more for a while after reopening.
    reopen_boost = np.ones((n_d, n_s))
    for s in rng.choice(n_s, size=max(1, n_s // 12), replace=False):
        length = int(rng.integers(14, 36))
        if n_d > length + 30:
            begin = int(rng.integers(0, n_d - length - 30))
            open_[begin : begin + length, s] = 0
            reopen_boost[begin + length : begin + length + 14, s] = 1.25

    mean = (
        level[None, :]
        * _WEEKLY[dow][:, None]
        * (yearly * december * trend)[:, None]
        * np.where(promo[:, None] == 1, promo_lift[None, :], 1.0)
        * np.where(school_h[:, None] == 1, 1.03, 1.0)
        * comp_effect
        * promo2_effect
        * reopen_boost
        * np.where(before, 1.2, 1.0)
        * np.where(after, 0.93, 1.0)
    )
    sales = np.round(mean * np.exp(rng.normal(0, 0.07, size=(n_d, n_s)))).astype("int64")
    sales[open_ == 0] = 0
    sales[(open_ == 1) & (rng.random((n_d, n_s)) < 0.0005)] = 0  # rare open days with no sales, as in Kaggle
    basket = rng.uniform(7.5, 10.5, size=n_s)
    customers = np.round(sales / basket[None, :]).astype("int64")

    train = pd.DataFrame(
        {
            "Store": np.tile(np.arange(1, n_s + 1), n_d),
            "DayOfWeek": np.repeat(dow + 1, n_s),
            "Date": np.repeat(dates.strftime("%Y-%m-%d").to_numpy(), n_s),
            "Sales": sales.ravel(),
            "Customers": customers.ravel(),
            "Open": open_.ravel(),
            "Promo": np.repeat(promo, n_s),
            "StateHoliday": state_h.ravel(),
            "SchoolHoliday": np.repeat(school_h, n_s),
        }
    )
    return train, store


def generate(stores: int = 60, days: int = 730, seed: int = 7, start: str = "2013-01-01") -> RawData:
    """Validated synthetic RawData, deterministic for a given (stores, days, seed, start)."""
    train, store = generate_frames(stores, days, seed, start)
    return validate_raw(train, store, source=f"synthetic:stores={stores},days={days},seed={seed},start={start}")


def write_csv(out_dir: Path, stores: int = 60, days: int = 730, seed: int = 7) -> tuple[Path, Path]:
    """Write Kaggle-format train.csv and store.csv (what `sluice generate-data` does)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train, store = generate_frames(stores, days, seed)
    train_path, store_path = out_dir / "train.csv", out_dir / "store.csv"
    # Kaggle's train.csv lists the newest date first.
    train.sort_values(["Date", "Store"], ascending=[False, True]).to_csv(train_path, index=False)
    store_out = store.copy()
    for col in (
        "CompetitionOpenSinceMonth",
        "CompetitionOpenSinceYear",
        "Promo2SinceWeek",
        "Promo2SinceYear",
    ):
        store_out[col] = store_out[col].astype("Int64")
    store_out.to_csv(store_path, index=False)
    return train_path, store_path
