"""Store levels as of a forecast origin: what each store sold recently, from data before the origin only.

A model registered at origin E (the day after its data) forecasts days E..E+41 from the levels as of
E. Training rows must see the same thing: a level computed over the whole training window would
contain the row's own sales (and later ones), and the model would learn to trust it more than it
deserves at a 1-42 day horizon. So each training row gets the levels as of its own origin: the
data are cut into 42-day blocks ending at the last day, and a row's origin is the first day of its
block, exactly like a forecast made at that block's start. `Horizon` is the row's day within the
block (1..42); at serving it is the days since the model's origin.

Computed on a (store x day) grid of log sales with cumulative sums, so every origin costs the same
few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RECENCY_COLUMNS: tuple[str, ...] = (
    "StoreRecentMeanLogSales",
    "StoreLevel14",
    "StoreLevel60",
    "StoreLevel365",
    "StoreTrend",
)
BLOCK_DAYS = 42  # the forecast horizon the model is trained for
RECENT_DAYS = 91  # "recent" mean: the last quarter before the origin
HALF_LIVES = (14, 60, 365)  # recency-weighted levels (net of the weekday profile), half-life in days
YEAR_DAYS = 364  # a year earlier, on the same weekdays


@dataclass(frozen=True)
class Grid:
    """Log sales per store and day (NaN: closed, no sales or no data), and cumulative sums over days."""

    stores: np.ndarray  # int64 store ids, rows of the arrays
    first_day: np.datetime64
    log_sales: np.ndarray  # float64 [stores, days]
    net: np.ndarray  # log sales minus the store's weekday mean

    @property
    def days(self) -> int:
        return self.log_sales.shape[1]


def make_grid(sold: pd.DataFrame, stores: np.ndarray, dow_mean: np.ndarray) -> Grid:
    """`sold`: rows with Store, Date, DayOfWeek, LogSales; `dow_mean`: [stores, 7] weekday means."""
    first = sold["Date"].min().to_datetime64().astype("datetime64[D]")
    last = sold["Date"].max().to_datetime64().astype("datetime64[D]")
    n_days = int((last - first).astype("int64")) + 1
    row = np.searchsorted(stores, sold["Store"].to_numpy())
    col = (sold["Date"].to_numpy().astype("datetime64[D]") - first).astype("int64")
    grid = np.full((len(stores), n_days), np.nan)
    grid[row, col] = sold["LogSales"].to_numpy()
    net = np.full_like(grid, np.nan)
    net[row, col] = grid[row, col] - dow_mean[row, sold["DayOfWeek"].to_numpy() - 1]
    return Grid(stores, first, grid, net)


def _window_mean(values: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Mean of the non-NaN values in days [end - length, end) for each end: [stores, len(ends)]."""
    seen = ~np.isnan(values)
    csum = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(np.where(seen, values, 0.0), axis=1)], axis=1)
    ccount = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(seen, axis=1)], axis=1)
    hi = np.clip(ends, 0, values.shape[1])
    lo = np.clip(ends - length, 0, values.shape[1])
    count = ccount[:, hi] - ccount[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[:, hi] - csum[:, lo]) / np.maximum(count, 1), np.nan)


def _ew_mean(values: np.ndarray, ends: np.ndarray, half_life: float) -> np.ndarray:
    """Exponentially weighted mean of days before each end (the day before weighs 1): [stores, len(ends)]."""
    decay = 0.5 ** (1 / half_life)
    seen = ~np.isnan(values)
    x = np.where(seen, values, 0.0)
    num = np.zeros(values.shape[0])
    den = np.zeros(values.shape[0])
    out = np.full((values.shape[0], len(ends)), np.nan)
    wanted = {int(e): i for i, e in enumerate(ends)}
    if 0 in wanted:
        out[:, wanted[0]] = np.nan
    for day in range(min(values.shape[1], int(max(ends)))):
        num = decay * num + x[:, day]
        den = decay * den + seen[:, day]
        i = wanted.get(day + 1)
        if i is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, i] = np.where(den > 0, num / den, np.nan)
    for end, i in wanted.items():  # origins after the last day: no newer data, same levels
        if end > values.shape[1]:
            out[:, i] = out[:, wanted[values.shape[1]]] if values.shape[1] in wanted else np.nan
    return out


def levels_at(grid: Grid, origins: np.ndarray) -> np.ndarray:
    """RECENCY_COLUMNS for each store at each origin (datetime64[D]), from days before it: [stores, origins, 5]."""
    ends = (origins.astype("datetime64[D]") - grid.first_day).astype("int64")
    ends_all = np.unique(np.concatenate([ends, [grid.days]]))
    recent = _window_mean(grid.log_sales, ends_all, RECENT_DAYS)
    year_ago = _window_mean(grid.log_sales, ends_all - YEAR_DAYS, RECENT_DAYS)
    cols = [recent]
    cols += [_ew_mean(grid.net, ends_all, h) for h in HALF_LIVES]
    cols.append(recent - year_ago)
    stacked = np.stack(cols, axis=2)  # [stores, ends_all, 5]
    return stacked[:, np.searchsorted(ends_all, ends), :]


def block_origins(days: np.ndarray, last_day: np.datetime64) -> np.ndarray:
    """Origin of each training day: the first day of its 42-day block, blocks ending on `last_day`."""
    back = (last_day - days).astype("int64")  # 0 on the last day
    return last_day - (back // BLOCK_DAYS) * BLOCK_DAYS - (BLOCK_DAYS - 1)


def horizon(days: np.ndarray, origins: np.ndarray | np.datetime64) -> np.ndarray:
    """Day of the horizon, 1 on the origin itself; clipped to 1..42."""
    return np.clip((days - origins).astype("int64") + 1, 1, BLOCK_DAYS)
