"""Request rows (Kaggle's test.csv columns minus Id) checked and typed as numpy arrays.

`parse_requests` is the model's one input check: types, allowed values and date format, each error
an InvalidInputError naming the column. The store id and the date range are checked against the
model's own tables in `features.feature_matrix`. It reads columns from a DataFrame or any mapping of
column name to array, and stays in numpy: a one-row request costs tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.errors import InvalidInputError
from model.schema import INPUT_COLUMNS, STATE_HOLIDAYS


@dataclass(frozen=True)
class Requests:
    """Validated input rows: int64 arrays, `day` as datetime64[D], StateHoliday as its code 0..3."""

    store: np.ndarray
    day_of_week: np.ndarray
    day: np.ndarray
    open: np.ndarray
    promo: np.ndarray
    state_holiday: np.ndarray
    school_holiday: np.ndarray

    def __len__(self) -> int:
        return len(self.store)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Requests:
        """Rows of validated training data (model.data): already typed, no checks needed."""
        return cls(
            store=frame["Store"].to_numpy("int64"),
            day_of_week=frame["DayOfWeek"].to_numpy("int64"),
            day=frame["Date"].to_numpy().astype("datetime64[D]"),
            open=frame["Open"].to_numpy("int64"),
            promo=frame["Promo"].to_numpy("int64"),
            state_holiday=state_holiday_codes(frame["StateHoliday"].to_numpy()),
            school_holiday=frame["SchoolHoliday"].to_numpy("int64"),
        )


_ALLOWED: dict[str, tuple[int, ...]] = {
    "DayOfWeek": tuple(range(1, 8)),
    "Open": (0, 1),
    "Promo": (0, 1),
    "SchoolHoliday": (0, 1),
}
_INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


def _column(data: Any, name: str) -> np.ndarray:
    if name not in data:
        raise InvalidInputError(name, f"required input missing (expected columns {INPUT_COLUMNS})")
    values = data[name]
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def _integers(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind in "iu":
        ints = values.astype("int64", copy=False)
    else:
        if values.dtype.kind == "f":
            floats = values.astype("float64")
        else:
            floats = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy("float64")
        if name == "Open":
            floats = np.where(np.isnan(floats), 1.0, floats)  # Kaggle's test.csv leaves Open blank on a few days
        bad = ~np.isfinite(floats) | (floats != np.round(floats))
        if bad.any():
            raise InvalidInputError(name, f"expected integers, got {values[bad][0]!r}")
        ints = floats.astype("int64")
    allowed = _ALLOWED.get(name)
    if allowed is not None:
        bad = (ints < allowed[0]) | (ints > allowed[-1])
        if bad.any():
            raise InvalidInputError(name, f"expected one of {list(allowed)}, got {ints[bad][0]}")
    return ints


def state_holiday_codes(values: np.ndarray) -> np.ndarray:
    """Kaggle's StateHoliday ("0", "a", "b", "c"; Kaggle's files also hold the number 0) as codes 0..3."""
    text = values.astype(str) if values.dtype.kind != "U" else values
    codes = np.full(len(text), -1, dtype="int64")
    for code, label in enumerate(STATE_HOLIDAYS):
        codes[text == label] = code
    if (codes < 0).any():
        text = np.strings.strip(text)
        codes[(text == "0") | (text == "0.0")] = 0
        for code, label in enumerate(STATE_HOLIDAYS):
            codes[text == label] = code
    bad = codes < 0
    if bad.any():
        raise InvalidInputError("StateHoliday", f"expected one of {list(STATE_HOLIDAYS)}, got {values[bad][0]!r}")
    return codes


def parse_days(values: np.ndarray, field: str = "Date") -> np.ndarray:
    """ISO dates (YYYY-MM-DD strings, or datetimes) as datetime64[D]; anything else names the field."""
    if values.dtype.kind == "M":
        if np.isnat(values).any():
            raise InvalidInputError(field, "expected a YYYY-MM-DD date, got a missing value")
        return values.astype("datetime64[D]")
    text = np.strings.strip(values.astype(str))
    # numpy also reads "2015-08" or "2015-08-06T10": only the exact YYYY-MM-DD form is a date here.
    shaped = (np.strings.str_len(text) == 10) & (np.strings.find(text, "-") == 4) & (np.strings.rfind(text, "-") == 7)
    if shaped.all():
        try:
            return text.astype("datetime64[D]")
        except ValueError:
            pass
    for raw, t, ok in zip(values, text, shaped, strict=True):  # the error path: find the first bad one
        try:
            if not ok or not t[:4].isdigit():
                raise ValueError
            np.datetime64(t, "D")
        except ValueError:
            raise InvalidInputError(field, f"expected a YYYY-MM-DD date, got {raw!r}") from None
    raise AssertionError("unreachable: every date parsed one by one")


def parse_requests(data: pd.DataFrame | Mapping[str, Any]) -> Requests:
    """Check and type request columns; every error names the column."""
    ints = {name: _integers(_column(data, name), name) for name in _INT_COLUMNS}
    day = parse_days(_column(data, "Date"))
    holiday = state_holiday_codes(_column(data, "StateHoliday"))
    n = len(day)
    for name, values in ints.items():
        if len(values) != n:
            raise InvalidInputError(name, f"{len(values)} values for {n} rows")
    if len(holiday) != n:
        raise InvalidInputError("StateHoliday", f"{len(holiday)} values for {n} rows")
    return Requests(
        store=ints["Store"],
        day_of_week=ints["DayOfWeek"],
        day=day,
        open=ints["Open"],
        promo=ints["Promo"],
        state_holiday=holiday,
        school_holiday=ints["SchoolHoliday"],
    )
