"""Load and validate Kaggle-format Rossmann data (train.csv + store.csv, plain or gzipped)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import DataValidationError
from model.schema import ASSORTMENTS, PROMO_INTERVALS, STATE_HOLIDAYS, STORE_DTYPES, STORE_TYPES, TRAIN_DTYPES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawData:
    train: pd.DataFrame
    store: pd.DataFrame
    source: str  # where it came from: "dir:/path" or "synthetic:stores=..,days=..,seed=.."

    @property
    def first_date(self) -> pd.Timestamp:
        return pd.Timestamp(self.train["Date"].min())

    @property
    def last_date(self) -> pd.Timestamp:
        return pd.Timestamp(self.train["Date"].max())


def _find(data_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"no {stem}.csv or {stem}.csv.gz in {data_dir}: point --data-dir (or ROSSMANN_DATA_DIR) at a "
        "directory with Kaggle's train.csv and store.csv, or omit it to use generated data"
    )


def read_sales(data_dir: Path) -> pd.DataFrame:
    """Store, Date and Sales of `data_dir`'s train.csv, typed, for display (the console's actual
    sales): a tenth of `load_raw`'s time on Kaggle's million rows, because it reads three columns
    and skips the validation training needs. A bad value raises pandas' own ValueError."""
    return pd.read_csv(
        _find(Path(data_dir), "train"),
        usecols=["Store", "Date", "Sales"],
        dtype={"Store": "int64", "Sales": "float64"},
        parse_dates=["Date"],
        date_format="%Y-%m-%d",
    )


def load_raw(data_dir: Path) -> RawData:
    """Read train.csv and store.csv from `data_dir` and validate them."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    started = time.perf_counter()
    train_path, store_path = _find(data_dir, "train"), _find(data_dir, "store")
    # Strings everywhere first: Kaggle's file mixes 0 and "0" in StateHoliday, and we want our own
    # error messages for bad values rather than a pandas parser traceback.
    train = pd.read_csv(train_path, dtype=str, keep_default_na=False)
    store = pd.read_csv(store_path, dtype=str, keep_default_na=False)
    log.info(
        "loaded %s (%s rows) and %s (%s rows) in %.1fs",
        train_path.name,
        f"{len(train):,}",
        store_path.name,
        f"{len(store):,}",
        time.perf_counter() - started,
    )
    raw = validate_raw(train, store, source=f"dir:{data_dir.resolve()}")
    return raw


def _sample(df: pd.DataFrame, mask: pd.Series | np.ndarray) -> str:
    return df.loc[mask].head(5).to_string()


def _require_columns(df: pd.DataFrame, columns: list[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            missing[0],
            f"required column missing from {table} (missing: {', '.join(missing)}; "
            f"found: {', '.join(map(str, df.columns))})",
        )


def _as_int(df: pd.DataFrame, col: str, allowed: set[int] | None = None, minimum: int | None = None) -> pd.Series:
    values = pd.to_numeric(df[col].astype(str).str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        raise DataValidationError(col, f"{int(bad.sum())} values are not integers", _sample(df, bad))
    ints = values.astype("int64")
    if allowed is not None:
        bad = ~ints.isin(allowed)
        if bad.any():
            raise DataValidationError(col, f"{int(bad.sum())} values outside {sorted(allowed)}", _sample(df, bad))
    if minimum is not None:
        bad = ints < minimum
        if bad.any():
            raise DataValidationError(col, f"{int(bad.sum())} values below {minimum}", _sample(df, bad))
    return ints


def _as_float(df: pd.DataFrame, col: str, minimum: float | None = None) -> pd.Series:
    text = df[col].astype(str).str.strip()
    values = pd.to_numeric(text.replace({"": np.nan, "nan": np.nan, "NaN": np.nan}), errors="coerce")
    bad = values.isna() & text.ne("") & ~text.str.lower().eq("nan")
    if bad.any():
        raise DataValidationError(col, f"{int(bad.sum())} values are not numbers", _sample(df, bad))
    if minimum is not None:
        bad = values < minimum
        if bad.any():
            raise DataValidationError(col, f"{int(bad.sum())} values below {minimum}", _sample(df, bad))
    return values.astype("float64")


def _as_category(df: pd.DataFrame, col: str, allowed: tuple[str, ...]) -> pd.Series:
    values = df[col].astype(str).str.strip()
    bad = ~values.isin(allowed)
    if bad.any():
        raise DataValidationError(col, f"{int(bad.sum())} values outside {list(allowed)}", _sample(df, bad))
    return values.astype(object)


def parse_dates(values: pd.Series, field: str = "Date") -> pd.Series:
    """Parse ISO dates (YYYY-MM-DD); anything else is an error naming the field."""
    parsed = pd.to_datetime(values.astype(str).str.strip(), format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        frame = pd.DataFrame({field: values})
        raise DataValidationError(field, f"{int(bad.sum())} dates do not parse as YYYY-MM-DD", _sample(frame, bad))
    return parsed


def validate_store(store: pd.DataFrame) -> pd.DataFrame:
    _require_columns(store, list(STORE_DTYPES), "store.csv")
    out = pd.DataFrame(index=store.index)
    out["Store"] = _as_int(store, "Store", minimum=1)
    out["StoreType"] = _as_category(store, "StoreType", STORE_TYPES)
    out["Assortment"] = _as_category(store, "Assortment", ASSORTMENTS)
    out["CompetitionDistance"] = _as_float(store, "CompetitionDistance", minimum=0)
    out["CompetitionOpenSinceMonth"] = _as_float(store, "CompetitionOpenSinceMonth", minimum=1)
    out["CompetitionOpenSinceYear"] = _as_float(store, "CompetitionOpenSinceYear", minimum=1900)
    out["Promo2"] = _as_int(store, "Promo2", allowed={0, 1})
    out["Promo2SinceWeek"] = _as_float(store, "Promo2SinceWeek", minimum=1)
    out["Promo2SinceYear"] = _as_float(store, "Promo2SinceYear", minimum=1900)
    interval = store["PromoInterval"].astype(str).str.strip().replace({"nan": ""})
    out["PromoInterval"] = _as_category(pd.DataFrame({"PromoInterval": interval}), "PromoInterval", PROMO_INTERVALS)
    month_bad = out["CompetitionOpenSinceMonth"] > 12
    if month_bad.any():
        raise DataValidationError("CompetitionOpenSinceMonth", "values above 12", _sample(store, month_bad))
    dup = out["Store"].duplicated(keep=False)
    if dup.any():
        raise DataValidationError("Store", f"{int(dup.sum())} rows repeat a Store id in store.csv", _sample(store, dup))
    return out.sort_values("Store").reset_index(drop=True)


def validate_train(train: pd.DataFrame, known_stores: set[int]) -> pd.DataFrame:
    _require_columns(train, list(TRAIN_DTYPES), "train.csv")
    out = pd.DataFrame(index=train.index)
    out["Store"] = _as_int(train, "Store", minimum=1)
    out["DayOfWeek"] = _as_int(train, "DayOfWeek", allowed=set(range(1, 8)))
    out["Date"] = parse_dates(train["Date"])
    out["Sales"] = _as_int(train, "Sales", minimum=0)
    out["Customers"] = _as_int(train, "Customers", minimum=0)
    out["Open"] = _as_int(train, "Open", allowed={0, 1})
    out["Promo"] = _as_int(train, "Promo", allowed={0, 1})
    out["StateHoliday"] = _as_category(train, "StateHoliday", STATE_HOLIDAYS)
    out["SchoolHoliday"] = _as_int(train, "SchoolHoliday", allowed={0, 1})
    wrong_dow = out["DayOfWeek"] != out["Date"].dt.dayofweek + 1
    if wrong_dow.any():
        raise DataValidationError(
            "DayOfWeek",
            f"{int(wrong_dow.sum())} rows where DayOfWeek does not match Date (1 = Monday)",
            _sample(train, wrong_dow),
        )
    unknown = ~out["Store"].isin(known_stores)
    if unknown.any():
        raise DataValidationError(
            "Store", f"{int(unknown.sum())} rows name stores missing from store.csv", _sample(train, unknown)
        )
    dup = out.duplicated(["Store", "Date"], keep=False)
    if dup.any():
        raise DataValidationError("Date", f"{int(dup.sum())} rows repeat a (Store, Date) pair", _sample(train, dup))
    sales_when_closed = (out["Open"] == 0) & (out["Sales"] > 0)
    if sales_when_closed.any():
        raise DataValidationError(
            "Sales",
            f"{int(sales_when_closed.sum())} closed days (Open=0) with Sales > 0",
            _sample(train, sales_when_closed),
        )
    return out.sort_values(["Date", "Store"]).reset_index(drop=True)


def validate_raw(train: pd.DataFrame, store: pd.DataFrame, source: str) -> RawData:
    """Check types, ranges, dates, duplicates and store references; return typed copies."""
    started = time.perf_counter()
    store_ok = validate_store(store)
    train_ok = validate_train(train, set(store_ok["Store"].tolist()))
    log.info(
        "validated %s store-days of %d stores (%s .. %s) in %.1fs",
        f"{len(train_ok):,}",
        train_ok["Store"].nunique(),
        train_ok["Date"].min().date(),
        train_ok["Date"].max().date(),
        time.perf_counter() - started,
    )
    return RawData(train=train_ok, store=store_ok, source=source)


def fingerprint(raw: RawData) -> str:
    """A content hash of the data, recorded on each model version to tell which data trained it."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(raw.train, index=False).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(raw.store, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
