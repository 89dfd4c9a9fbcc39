"""Fast tests of model/: metrics, validation of raw data, features, calendar, generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.calendar import holiday_distances, infer_states, state_holiday_dates
from model.data import load_raw, validate_raw
from model.errors import DataValidationError, InvalidInputError
from model.features import FEATURES, build_store_table, coerce_input, make_features
from model.metrics import rmse, rmspe
from model.schema import INPUT_COLUMNS, STORE_DTYPES, TRAIN_DTYPES
from model.synthetic import generate, generate_frames, write_csv


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    train, store = generate_frames(stores=8, days=120, seed=3)
    return train.astype(str), store.astype(str).replace({"nan": ""})


# --- metrics ------------------------------------------------------------------------------------


def test_rmspe_ignores_zero_sales_days() -> None:
    assert rmspe([100, 0, 200], [110, 50, 180]) == pytest.approx(np.sqrt((0.01 + 0.01) / 2))


def test_rmspe_perfect_and_rmse() -> None:
    assert rmspe([5, 7], [5, 7]) == 0.0
    assert rmse([0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5))


@pytest.mark.parametrize("truth,pred", [([0, 0], [1, 1]), ([1, 2], [1])])
def test_rmspe_rejects_unusable_input(truth: list[int], pred: list[int]) -> None:
    with pytest.raises(ValueError):
        rmspe(truth, pred)


# --- raw data validation: each bad input names its column --------------------------------------


def _break_train(frame: pd.DataFrame, column: str, value: str, row: int = 3) -> pd.DataFrame:
    out = frame.copy()
    out.loc[row, column] = value
    return out


BAD_TRAIN = [
    ("Date", "2015-13-45", "Date", "do not parse"),
    ("Sales", "-5", "Sales", "below 0"),
    ("Sales", "lots", "Sales", "not integers"),
    ("Open", "2", "Open", "outside [0, 1]"),
    ("Promo", "yes", "Promo", "not integers"),
    ("StateHoliday", "x", "StateHoliday", "outside"),
    ("DayOfWeek", "9", "DayOfWeek", "outside"),
    ("Store", "999", "Store", "missing from store.csv"),
    ("SchoolHoliday", "1.5", "SchoolHoliday", "not integers"),
]


@pytest.mark.parametrize("column,value,named,problem", BAD_TRAIN)
def test_bad_train_values_name_the_column(
    frames: tuple[pd.DataFrame, pd.DataFrame], column: str, value: str, named: str, problem: str
) -> None:
    train, store = frames
    with pytest.raises(DataValidationError) as err:
        validate_raw(_break_train(train, column, value), store, source="test")
    assert err.value.column == named
    assert problem in str(err.value)
    assert "offending rows" in str(err.value)


def test_wrong_day_of_week_for_date(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, store = frames
    dow = int(train.loc[3, "DayOfWeek"])
    with pytest.raises(DataValidationError, match="does not match Date"):
        validate_raw(_break_train(train, "DayOfWeek", str(dow % 7 + 1)), store, source="test")


def test_duplicate_store_day(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, store = frames
    with pytest.raises(DataValidationError, match=r"repeat a \(Store, Date\) pair"):
        validate_raw(pd.concat([train, train.iloc[[5]]], ignore_index=True), store, source="test")


def test_missing_column_is_named(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, store = frames
    with pytest.raises(DataValidationError) as err:
        validate_raw(train.drop(columns=["Promo"]), store, source="test")
    assert err.value.column == "Promo"


@pytest.mark.parametrize(
    "column,value,problem",
    [
        ("StoreType", "z", "outside"),
        ("CompetitionDistance", "-10", "below 0"),
        ("PromoInterval", "Jan", "outside"),
        ("CompetitionOpenSinceMonth", "14", "above 12"),
    ],
)
def test_bad_store_values(frames: tuple[pd.DataFrame, pd.DataFrame], column: str, value: str, problem: str) -> None:
    train, store = frames
    bad = store.copy()
    bad.loc[1, column] = value
    with pytest.raises(DataValidationError) as err:
        validate_raw(train, bad, source="test")
    assert err.value.column == column
    assert problem in str(err.value)


def test_load_raw_reads_plain_and_gzip(tmp_path: Path) -> None:
    write_csv(tmp_path, stores=5, days=30, seed=1)
    plain = load_raw(tmp_path)
    gz = tmp_path / "gz"
    gz.mkdir()
    for name in ("train", "store"):
        pd.read_csv(tmp_path / f"{name}.csv", dtype=str).to_csv(gz / f"{name}.csv.gz", index=False)
    zipped = load_raw(gz)
    pd.testing.assert_frame_equal(plain.train, zipped.train)
    assert list(plain.train.columns) == list(TRAIN_DTYPES)
    assert list(plain.store.columns) == list(STORE_DTYPES)


def test_load_raw_explains_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ROSSMANN_DATA_DIR"):
        load_raw(tmp_path)


# --- generator ----------------------------------------------------------------------------------


def test_generator_is_deterministic_and_realistic() -> None:
    a, b = generate(stores=12, days=400, seed=5), generate(stores=12, days=400, seed=5)
    pd.testing.assert_frame_equal(a.train, b.train)
    t = a.train
    sundays = t[t["DayOfWeek"] == 7]
    assert sundays["Open"].mean() < 0.5, "most stores close on Sunday"
    assert (t.loc[t["Open"] == 0, "Sales"] == 0).all()
    sold = t[t["Sales"] > 0]
    promo_lift = sold.groupby("Promo")["Sales"].mean()
    assert promo_lift[1] > promo_lift[0] * 1.1
    assert set(t["StateHoliday"]) >= {"0", "a"}
    assert set(a.store["StoreType"]) <= set("abcd")


# --- calendar and features ----------------------------------------------------------------------


def test_infer_states_recovers_generated_states() -> None:
    raw = generate(stores=20, days=500, seed=11)
    states = infer_states(raw.train)
    assert states.index.tolist() == list(range(1, 21))
    # The generator gives each store a real state's calendar; several states share a calendar, so
    # the check is that the inferred state reproduces each store's holidays exactly.
    first, last = raw.first_date, raw.last_date
    for store, state in states.items():
        observed = set(raw.train.loc[(raw.train["Store"] == store) & (raw.train["StateHoliday"] != "0"), "Date"])
        cal = {pd.Timestamp(d) for d in state_holiday_dates(state, range(first.year, last.year + 1))}
        assert observed == {d for d in cal if first <= d <= last}, f"store {store} -> {state}"


def test_holiday_distances() -> None:
    dates = pd.Series(pd.to_datetime(["2015-05-13", "2015-05-14", "2015-05-16", "2015-07-10"]))
    to_next, since = holiday_distances(dates, np.array(["BY"] * 4))
    assert to_next.tolist()[:3] == [1, 0, 9]  # Ascension 05-14, Whit Monday 05-25
    assert since.tolist()[:3] == [12, 0, 2]
    assert to_next[3] == 15  # clipped: nothing within two weeks


def test_features_are_complete_and_finite() -> None:
    raw = generate(stores=10, days=200, seed=2)
    table = build_store_table(raw.store, raw.train)
    x = make_features(raw.train, table)
    assert list(x.columns) == FEATURES
    assert np.isfinite(x.to_numpy()).all()


BAD_REQUESTS = [
    ({"Store": [999]}, "Store", "unknown store"),
    ({"Date": ["2015-02-30"]}, "Date", "YYYY-MM-DD"),
    ({"DayOfWeek": [8]}, "DayOfWeek", "one of"),
    ({"Promo": [0.5]}, "Promo", "integers"),
    ({"StateHoliday": ["z"]}, "StateHoliday", "one of"),
    ({"Open": [float("inf")]}, "Open", "integers"),
]


@pytest.mark.parametrize("override,field,message", BAD_REQUESTS)
def test_coerce_input_names_the_field(override: dict[str, list[object]], field: str, message: str) -> None:
    row = {
        "Store": [1],
        "DayOfWeek": [4],
        "Date": ["2015-08-06"],
        "Open": [1],
        "Promo": [1],
        "StateHoliday": ["0"],
        "SchoolHoliday": [0],
    } | override
    with pytest.raises(InvalidInputError) as err:
        coerce_input(pd.DataFrame(row), pd.Index([1, 2, 3]))
    assert err.value.field == field
    assert message in str(err.value)


def test_coerce_input_treats_missing_open_as_open() -> None:
    rows = pd.DataFrame(
        {
            "Store": [1],
            "DayOfWeek": [4],
            "Date": ["2015-08-06"],
            "Open": [None],
            "Promo": [1],
            "StateHoliday": [0],
            "SchoolHoliday": [0],
        }
    )
    out = coerce_input(rows, pd.Index([1]))
    assert out["Open"].tolist() == [1]
    assert list(out.columns) == INPUT_COLUMNS


def test_iso_week_matches_pandas() -> None:
    from model.features import iso_week

    dates = pd.date_range("1999-12-20", "2031-01-10", freq="D")
    expected = dates.isocalendar().week.to_numpy().astype("int64")
    assert (iso_week(dates.to_numpy().astype("datetime64[D]")) == expected).all()
