"""Fast tests of model/: metrics, validation of raw data, features, calendar, generator, predict path."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from model import reference
from model.backtest import backtest_window, default_windows, run_backtests, seed_study
from model.calendar import build_calendar, infer_states, iso_week, state_holiday_dates
from model.data import RawData, load_raw, validate_raw
from model.errors import DataValidationError, InvalidInputError
from model.features import FEATURES, FeatureTables, build_store_table, calendar_for, feature_matrix
from model.inputs import Requests, parse_requests
from model.metrics import rmse, rmspe
from model.pyfunc import save_pyfunc
from model.schema import INPUT_COLUMNS, STORE_DTYPES, TRAIN_DTYPES
from model.selection import SELECTION, load_selection
from model.small_batch import TreeWalk
from model.synthetic import generate, generate_frames, write_csv
from model.training import TrainConfig, TrainedModel, forecast, train


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


def test_calendar_table_holiday_distances() -> None:
    cal = build_calendar(["BY", "NW"], range(2015, 2016))
    days = np.array(["2015-05-13", "2015-05-14", "2015-05-16", "2015-07-10", "2015-06-03"], dtype="datetime64[D]")
    d = cal.day_index(days)
    by, nw = cal.state_index(np.array(["BY", "NW"]))
    assert cal.days_to_holiday[by, d].tolist()[:3] == [1, 0, 9]  # Ascension 05-14, Whit Monday 05-25
    assert cal.days_since_holiday[by, d].tolist()[:3] == [12, 0, 2]
    assert cal.days_to_holiday[by, d][3] == 15  # clipped: nothing within two weeks
    assert cal.days_to_holiday[by, d][4] == 1 and cal.days_to_holiday[nw, d][4] == 1  # Corpus Christi in both
    # Distances across the year boundary use the neighbouring years' holidays.
    edge = cal.day_index(np.array(["2015-12-31", "2015-01-01"], dtype="datetime64[D]"))
    assert cal.days_to_holiday[by, edge][0] == 1 and cal.days_since_holiday[by, edge][1] == 0
    assert cal.days_since_holiday[by, edge][0] == 5  # Boxing Day


def test_calendar_day_features_match_pandas() -> None:
    cal = build_calendar(["BE"], range(1999, 2031))
    dates = pd.date_range(str(cal.first_day), str(cal.last_day), freq="D")
    day = cal.day_features
    assert (day[:, 0] == dates.year).all() and (day[:, 1] == dates.month).all() and (day[:, 2] == dates.day).all()
    assert (day[:, 3] == dates.isocalendar().week.to_numpy()).all()
    assert (day[:, 4] == dates.dayofyear).all()
    assert (iso_week(dates.to_numpy().astype("datetime64[D]")) == dates.isocalendar().week.to_numpy()).all()


def test_calendar_round_trips_through_a_file(tmp_path: Path) -> None:
    cal = build_calendar(["HE", "SN"], range(2014, 2016))
    cal.save(tmp_path / "calendar.npz")
    back = type(cal).load(tmp_path / "calendar.npz")
    assert back.first_day == cal.first_day and back.states == cal.states
    assert (back.days_to_holiday == cal.days_to_holiday).all() and (back.day_features == cal.day_features).all()


@pytest.fixture(scope="module")
def small() -> tuple[object, FeatureTables]:
    raw = generate(stores=10, days=400, seed=2)
    table = build_store_table(raw.store, raw.train)
    return raw, FeatureTables.build(table, calendar_for(table, raw.first_date, raw.last_date))


def test_features_are_complete_and_finite(small: tuple[object, FeatureTables]) -> None:
    raw, tables = small
    x = feature_matrix(tables, Requests.from_frame(raw.train))  # type: ignore[attr-defined]
    assert x.shape == (len(raw.train), len(FEATURES))  # type: ignore[attr-defined]
    assert np.isfinite(x).all()


@pytest.mark.parametrize("date", ["1989-12-31", "1900-01-01", "2262-04-11", "9999-12-31", "0001-01-01"])
def test_dates_outside_the_served_range_name_the_field(small: tuple[object, FeatureTables], date: str) -> None:
    _, tables = small
    req = parse_requests(_row(Date=[date]))
    with pytest.raises(InvalidInputError) as err:
        feature_matrix(tables, req)
    assert err.value.field == "Date" and "outside the dates this model serves" in str(err.value)


def test_served_range_covers_the_data_and_years_after(small: tuple[object, FeatureTables]) -> None:
    raw, tables = small
    cal = tables.calendar
    assert str(cal.first_day) == f"{raw.first_date.year - 1}-01-01"  # type: ignore[attr-defined]
    assert str(cal.last_day) == f"{raw.last_date.year + 5}-12-31"  # type: ignore[attr-defined]
    for date in (str(cal.first_day), str(cal.last_day)):
        assert feature_matrix(tables, parse_requests(_row(Date=[date]))).shape == (1, len(FEATURES))


def _row(**override: list[object]) -> dict[str, list[object]]:
    return {
        "Store": [1],
        "DayOfWeek": [4],
        "Date": ["2013-08-06"],
        "Open": [1],
        "Promo": [1],
        "StateHoliday": ["0"],
        "SchoolHoliday": [0],
    } | override


BAD_REQUESTS = [
    ({"Date": ["2015-02-30"]}, "Date", "YYYY-MM-DD"),
    ({"Date": ["2015-08"]}, "Date", "YYYY-MM-DD"),
    ({"Date": ["2015-08-06T10"]}, "Date", "YYYY-MM-DD"),
    ({"Date": ["06.08.2015"]}, "Date", "YYYY-MM-DD"),
    ({"Date": [None]}, "Date", "YYYY-MM-DD"),
    ({"DayOfWeek": [8]}, "DayOfWeek", "one of"),
    ({"DayOfWeek": ["x"]}, "DayOfWeek", "integers"),
    ({"Promo": [0.5]}, "Promo", "integers"),
    ({"StateHoliday": ["z"]}, "StateHoliday", "one of"),
    ({"StateHoliday": [None]}, "StateHoliday", "one of"),
    ({"Open": [float("inf")]}, "Open", "integers"),
    ({"SchoolHoliday": [-1]}, "SchoolHoliday", "one of"),
]


@pytest.mark.parametrize("override,field,message", BAD_REQUESTS)
def test_bad_requests_name_the_field(override: dict[str, list[object]], field: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_requests(pd.DataFrame(_row(**override)))
    assert err.value.field == field
    assert message in str(err.value)


@pytest.mark.parametrize("store", [999, 0, -5, 2**40])
def test_unknown_store_names_the_field(small: tuple[object, FeatureTables], store: int) -> None:
    _, tables = small
    with pytest.raises(InvalidInputError) as err:
        feature_matrix(tables, parse_requests(_row(Store=[store])))
    assert err.value.field == "Store" and "unknown store" in str(err.value)


def test_missing_request_column_is_named() -> None:
    row = _row()
    del row["Promo"]
    with pytest.raises(InvalidInputError) as err:
        parse_requests(row)
    assert err.value.field == "Promo"


def test_parse_requests_reads_frames_and_mappings_alike() -> None:
    rows = {
        "Store": [1, 2],
        "DayOfWeek": [4, 5],
        "Date": ["2015-08-06", " 2015-08-07 "],
        "Open": [None, 0],  # Kaggle's test.csv leaves Open blank on a few days: open
        "Promo": [1, 0],
        "StateHoliday": [0, "a"],  # Kaggle's files mix the number 0 and strings
        "SchoolHoliday": [0, 1],
    }
    a, b = parse_requests(pd.DataFrame(rows)), parse_requests({k: np.array(v, dtype=object) for k, v in rows.items()})
    for req in (a, b):
        assert req.open.tolist() == [1, 0]
        assert req.state_holiday.tolist() == [0, 1]
        assert req.day.tolist() == [np.datetime64("2015-08-06"), np.datetime64("2015-08-07")]


# --- the registered pyfunc predicts exactly what the training-time forecast function does ----------
# On real Kaggle rows (train.csv, and test.csv request rows) when ROSSMANN_DATA_DIR is set, on
# generated rows otherwise. The model is the quick preset on a subset of stores: this checks the
# prediction path, not accuracy.

REAL_DATA = os.environ.get("ROSSMANN_DATA_DIR")


def _data() -> tuple[RawData, pd.DataFrame | None]:
    if not REAL_DATA:
        return generate(stores=12, days=420, seed=5), None
    raw = load_raw(Path(REAL_DATA))
    keep = raw.train["Store"] <= 40
    raw = RawData(raw.train[keep].reset_index(drop=True), raw.store[raw.store["Store"] <= 40], raw.source)
    test_csv = Path(REAL_DATA) / "test.csv.gz"
    requests = None
    if test_csv.is_file():  # Kaggle's request rows, as clients send them (strings, blanks)
        requests = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
        requests = requests[requests["Store"].astype(int) <= 40][INPUT_COLUMNS]
    return raw, requests


Loaded = tuple[RawData, pd.DataFrame | None, TrainedModel, object]


@pytest.fixture(scope="module")
def trained_and_loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    raw, requests = _data()
    trained = train(raw, TrainConfig.quick(), progress=False)
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    save_pyfunc(trained, path)
    return raw, requests, trained, mlflow.pyfunc.load_model(str(path))


def test_pyfunc_equals_training_forecast(trained_and_loaded) -> None:  # type: ignore[no-untyped-def]
    raw, _, trained, loaded = trained_and_loaded
    rows = raw.train.sample(2000, random_state=1).sort_index()
    request = rows[INPUT_COLUMNS].assign(Date=rows["Date"].dt.strftime("%Y-%m-%d"))
    served = np.asarray(loaded.predict(request))
    assert (served == forecast(trained.booster, trained.store_table, rows)).all()
    assert (served == trained.forecaster.predict(Requests.from_frame(rows))).all()
    # The runtime's path (serving.model): the same model given the request's column arrays.
    columns = {c: request[c].to_numpy() for c in INPUT_COLUMNS}
    assert (np.asarray(loaded.unwrap_python_model().predict_columns(columns)) == served).all()
    assert (served[rows["Open"].to_numpy() == 0] == 0).all() and (served[rows["Open"].to_numpy() == 1] > 0).all()


def test_the_serving_example_is_one_mlflows_scoring_server_takes(trained_and_loaded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """MLflow validates serving_input_example.json when it logs a model (a warning with "Got error" in
    every training log when it fails) with the code of `mlflow models serve`, which for this model
    takes only `{"inputs": ...}`; the example is scored and equals the DataFrame's forecast."""
    import json

    from mlflow.models.utils import _validate_serving_input  # what log_model runs

    _, _, trained, loaded = trained_and_loaded
    save_pyfunc(trained, tmp_path / "model")
    example = json.loads((tmp_path / "model" / "serving_input_example.json").read_text())
    assert set(example) == {"inputs"} and set(example["inputs"]) == set(INPUT_COLUMNS)
    served = np.asarray(_validate_serving_input(str(tmp_path / "model"), json.dumps(example)))
    assert (served == np.asarray(loaded.predict(pd.DataFrame(example["inputs"])))).all() and (served > 0).any()


def test_reference_sample_is_the_holdout_with_served_predictions(trained_and_loaded) -> None:  # type: ignore[no-untyped-def]
    raw, _, trained, loaded = trained_and_loaded
    ref = trained.reference
    assert ref is not None and list(ref.columns) == reference.COLUMNS
    assert 0 < len(ref) <= reference.ROWS
    # Only holdout days (the last window), strings as clients send them, no store-day twice.
    assert ref["Date"].min() >= trained.windows["valid_start"] and ref["Date"].max() == trained.windows["valid_end"]
    assert not ref.duplicated(["Store", "Date"]).any()
    # The prediction is the served model's, and Sales the truth of that store-day.
    served = np.asarray(loaded.predict(ref[INPUT_COLUMNS]))
    assert np.array_equal(served, ref["prediction"].to_numpy())
    truth = raw.train.assign(Date=raw.train["Date"].dt.strftime("%Y-%m-%d")).set_index(["Store", "Date"])["Sales"]
    assert (truth.loc[list(zip(ref["Store"], ref["Date"], strict=True))].to_numpy() == ref["Sales"].to_numpy()).all()
    # Round trip through the artifact format.
    back = reference.load(ref.to_parquet(index=False))
    pd.testing.assert_frame_equal(back, ref)
    # Capped at `rows`, drawn reproducibly.
    window = raw.train[raw.train["Date"] >= trained.windows["valid_start"]]
    small = reference.sample(trained.forecaster, window, rows=100, seed=3)
    assert len(small) == 100 and small.equals(reference.sample(trained.forecaster, window, rows=100, seed=3))


def test_one_row_at_a_time_equals_the_batch(trained_and_loaded) -> None:  # type: ignore[no-untyped-def]
    raw, _, _, loaded = trained_and_loaded
    rows = raw.train[INPUT_COLUMNS].tail(30).assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d"))
    batch = np.asarray(loaded.predict(rows))
    single = [float(np.asarray(loaded.predict(rows.iloc[[i]]))[0]) for i in range(len(rows))]
    assert batch.tolist() == single


def test_small_batches_through_the_tree_walk_are_bit_for_bit_inplace_predict(  # type: ignore[no-untyped-def]
    trained_and_loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, _, trained, _ = trained_and_loaded
    forecaster = trained.forecaster
    rows = raw.train.sample(400, random_state=3).sort_index()
    matrix = feature_matrix(forecaster.tables, Requests.from_frame(rows))
    walk = TreeWalk.of(forecaster.booster)
    assert walk is not None and len(walk.roots) == forecaster.booster.num_boosted_rounds()
    expected = forecaster.booster.inplace_predict(matrix)
    assert np.array_equal(walk.predict(matrix), expected)
    for size in (1, 2, 7, 16):
        head = matrix[:64]
        got = np.concatenate([walk.predict(head[i : i + size]) for i in range(0, 64, size)])
        assert np.array_equal(got, expected[:64]), size
    # Rows off the training data's grid, and missing values: each node's default branch.
    rng = np.random.default_rng(5)
    odd = (matrix + rng.normal(size=matrix.shape).astype(np.float32) * matrix.std(axis=0)).astype(np.float32)
    odd[rng.random(odd.shape) < 0.3] = np.nan
    assert np.array_equal(walk.predict(odd), forecaster.booster.inplace_predict(odd))
    # Through the forecast function: small batches take the walk and agree with one large batch.
    batch = forecaster.log_sales(Requests.from_frame(rows))
    called, original = [], TreeWalk.predict
    monkeypatch.setattr(TreeWalk, "predict", lambda self, *a: called.append(1) or original(self, *a))
    small = [forecaster.log_sales(Requests.from_frame(rows.iloc[i : i + 3])) for i in range(0, 30, 3)]
    assert len(called) == 10 and np.array_equal(np.concatenate(small), batch[:30])


def test_the_tree_walk_follows_each_nodes_default_branch_for_missing_values() -> None:
    import xgboost as xgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = x[:, 0] + np.where(rng.random(2000) < 0.5, 2.0, -2.0)
    # Missing where y is high in one column and low in the other: both default directions are learnt.
    x[(y > 0) & (rng.random(2000) < 0.4), 1] = np.nan
    x[(y < 0) & (rng.random(2000) < 0.4), 2] = np.nan
    booster = xgb.train({"max_depth": 4, "eta": 0.3}, xgb.DMatrix(x, y), 20)
    walk = TreeWalk.of(booster)
    assert walk is not None and walk.missing_right.any() and (~walk.missing_right).any()
    probe = rng.normal(size=(500, 4)).astype(np.float32)
    probe[rng.random(probe.shape) < 0.3] = np.nan
    assert np.array_equal(walk.predict(probe), booster.inplace_predict(probe))
    # A matrix of another width is an error, as in xgboost, not a misread of the next row.
    for width in (3, 5):
        with pytest.raises(ValueError, match="expects 4 columns"):
            walk.predict(probe[:, :width] if width < 4 else np.hstack([probe, probe[:, :1]]))
    # An attribute named like a tree's field does not pass for a tree.
    booster.set_attr(split_conditions="1")
    assert TreeWalk.of(booster) is not None


def test_the_tree_walk_sums_the_trees_of_a_forest_per_round_as_xgboost_does() -> None:
    """Two trees per round (num_parallel_tree, `sluice backtest --parallel-trees 2`): still one sum over the trees."""
    import xgboost as xgb

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = 2 * x[:, 0] + np.sin(3 * x[:, 1]) + rng.normal(size=3000) * 0.1
    params = {"max_depth": 5, "eta": 0.2, "subsample": 0.8, "colsample_bytree": 0.7, "num_parallel_tree": 2}
    booster = xgb.train(params, xgb.DMatrix(x, y), 15)
    assert booster.num_boosted_rounds() == 15 and len(booster.get_dump()) == 30
    walk = TreeWalk.of(booster)
    assert walk is not None
    probe = rng.normal(size=(64, 6)).astype(np.float32)
    probe[rng.random(probe.shape) < 0.2] = np.nan
    assert np.array_equal(walk.predict(probe), booster.inplace_predict(probe))


def test_the_tree_walk_refuses_outputs_that_are_not_a_plain_sum_of_numeric_splits() -> None:
    import xgboost as xgb

    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    y = np.abs(x[:, 0]) + 0.1
    for objective in ("reg:tweedie", "reg:logistic"):
        booster = xgb.train({"objective": objective, "max_depth": 2}, xgb.DMatrix(x, np.clip(y, 0, 1)), 3)
        assert TreeWalk.of(booster) is None, objective
    frame = pd.DataFrame({"a": x[:, 0], "c": pd.Categorical(np.where(x[:, 1] > 0, "p", "n"))})
    by_category = y + 5.0 * (x[:, 1] > 0)
    categorical = xgb.train({"max_depth": 2}, xgb.DMatrix(frame, by_category, enable_categorical=True), 3)
    assert TreeWalk.of(categorical) is None


@pytest.mark.skipif(not REAL_DATA, reason="ROSSMANN_DATA_DIR not set: Kaggle's test.csv rows not available")
def test_kaggle_request_rows(trained_and_loaded) -> None:  # type: ignore[no-untyped-def]
    _, requests, trained, loaded = trained_and_loaded
    if requests is None:
        pytest.skip("no test.csv(.gz) beside train.csv")
    # As the signature types them (the blank Open of a few rows cannot be a long: a client sends 1).
    ints = {c: requests[c].replace("", "1").astype("int64") for c in ("Store", "DayOfWeek", "Open", "Promo")}
    request = requests.assign(**ints, SchoolHoliday=requests["SchoolHoliday"].astype("int64"))
    served = np.asarray(loaded.predict(request))
    typed = request.assign(Date=pd.to_datetime(request["Date"]))
    assert (served == forecast(trained.booster, trained.store_table, typed)).all()
    assert np.isfinite(served).all() and (served[typed["Open"].to_numpy() == 1] > 0).all()


@pytest.mark.parametrize("date", ["1989-12-31", "1900-01-01", "2262-04-11"])
def test_out_of_range_dates_are_input_errors_through_the_pyfunc(trained_and_loaded, date: str) -> None:  # type: ignore[no-untyped-def]
    raw, _, _, loaded = trained_and_loaded
    row = raw.train[INPUT_COLUMNS].head(1).assign(Date=date)
    with pytest.raises(InvalidInputError) as err:
        loaded.predict(row)
    assert err.value.field == "Date"


# --- backtests and the settings they choose -------------------------------------------------------


def _span(first: str, last: str) -> RawData:
    days = pd.to_datetime([first, last])
    return RawData(pd.DataFrame({"Date": days}), pd.DataFrame(), "test")


def test_default_windows_for_the_kaggle_span() -> None:
    windows = default_windows(_span("2013-01-01", "2015-06-19"))
    assert [w.label for w in windows] == [
        "2014-05-09..2014-06-19",  # the holdout's season a year earlier
        "2014-06-20..2014-07-31",  # the season of the 42 days after the data, a year earlier
        "2014-08-01..2014-09-11",
        "2015-03-28..2015-05-08",  # just before the holdout (2015-05-09..06-19), which no window touches
    ]


def test_short_data_has_fewer_windows() -> None:
    assert [w.label for w in default_windows(_span("2013-01-01", "2014-03-31"))] == ["2014-01-07..2014-02-17"]
    assert default_windows(_span("2013-01-01", "2013-10-31")) == []


@pytest.fixture(scope="module")
def backtest_raw() -> RawData:
    return generate(stores=6, days=600, seed=4)


def test_backtests_score_each_window_by_rounds_and_week(backtest_raw: RawData, tmp_path: Path) -> None:
    config = replace(TrainConfig.quick(), rounds=20)
    report = run_backtests(backtest_raw, config, checkpoints=[10, 20, 30])
    assert [r.window for r in report.results] == [w.label for w in default_windows(backtest_raw)]
    for r in report.results:
        assert set(r.by_rounds) == {10, 20, 30} and r.by_rounds[20] == r.rmspe
        assert len(r.by_week) == 6 and 0 < r.rmspe < 0.5
        assert pd.Timestamp(r.train_end) < pd.Timestamp(r.window.split("..")[0])
    parallel = run_backtests(backtest_raw, config, checkpoints=[10, 20, 30], jobs=2)  # one process per window
    assert [r.window for r in parallel.results] == [r.window for r in report.results]
    assert [r.rmspe for r in parallel.results] == pytest.approx([r.rmspe for r in report.results], rel=1e-3)
    chosen = report.selection("test-selection", "sluice backtest ...")
    assert chosen.config["rounds"] == report.best_rounds() in (10, 20, 30)
    assert chosen.rmspe_mean == pytest.approx(report.mean_by_rounds()[chosen.config["rounds"]])
    (tmp_path / "selection.json").write_text(chosen.to_json())
    assert load_selection(tmp_path / "selection.json") == chosen


def test_seed_study_scores_each_seed_and_their_average(backtest_raw: RawData) -> None:
    """Each seed is its own fit (they differ); the average is scored on the mean log forecast."""
    config = replace(TrainConfig.quick(), rounds=15)
    window = default_windows(backtest_raw)[:1]
    results = seed_study(backtest_raw, config, [1, 2, 3], windows=window)
    (r,) = results
    assert r.window == window[0].label and list(r.by_seed) == [1, 2, 3]
    assert len(set(r.by_seed.values())) > 1 and r.spread > 0  # the seed moves the figure
    single = [backtest_window(backtest_raw, window[0], replace(config, seed=s), [15]).rmspe for s in (1, 2, 3)]
    assert list(r.by_seed.values()) == pytest.approx(single)
    # Averaging log forecasts cannot be worse than the worst seed on squared-error-like metrics here.
    assert r.averaged < max(single)
    parallel = seed_study(backtest_raw, config, [1, 2, 3], windows=window, jobs=2)
    assert parallel[0].by_seed == pytest.approx(r.by_seed, rel=1e-3)
    with pytest.raises(ValueError, match="two different seeds"):
        seed_study(backtest_raw, config, [1, 1], windows=window)


def test_backtests_ignore_everything_after_the_window(backtest_raw: RawData) -> None:
    """Nothing after a window's end reaches its model: scrambling those sales changes no figure."""
    window = default_windows(backtest_raw)[0]
    train = backtest_raw.train.copy()
    after = train["Date"] > window.end
    train.loc[after, "Sales"] = train.loc[after, "Sales"].sample(frac=1, random_state=0).to_numpy()
    scrambled = RawData(train, backtest_raw.store, backtest_raw.source)
    config = replace(TrainConfig.quick(), rounds=10)
    a = backtest_window(backtest_raw, window, config, [10])
    b = backtest_window(scrambled, window, config, [10])
    assert (a.rmspe, a.by_week) == (b.rmspe, b.by_week)


def test_training_defaults_are_the_selected_settings() -> None:
    config = TrainConfig()
    assert {k: getattr(config, k) for k in SELECTION.config} == SELECTION.config
    assert config.selected_by == SELECTION.id


def test_train_refits_on_all_data_and_scores_a_holdout_fitted_before_it(backtest_raw: RawData) -> None:
    trained = train(backtest_raw, TrainConfig.quick(), progress=False)
    assert trained.windows["train_end"] == str(backtest_raw.last_date.date())
    holdout_start = pd.Timestamp(trained.windows["valid_start"])
    assert (
        trained.holdout.store_table["StoreRecentMeanLogSales"].ne(trained.store_table["StoreRecentMeanLogSales"]).any()
    )
    # The holdout model's statistics stop the day before the holdout: rebuild them from that data.
    before = backtest_raw.train[backtest_raw.train["Date"] < holdout_start]
    pd.testing.assert_frame_equal(trained.holdout.store_table, build_store_table(backtest_raw.store, before))
    assert trained.booster.num_boosted_rounds() == trained.holdout.booster.num_boosted_rounds() == 80


def test_one_input_check_the_models_own(trained_and_loaded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """MLflow skips its schema enforcement (the model checks every column itself), the signature stays."""
    raw, _, trained, loaded = trained_and_loaded
    path = tmp_path / "m"
    save_pyfunc(trained, path)
    mlmodel = (path / "MLmodel").read_text()
    assert "is_signature_from_type_hint: true" in mlmodel
    assert loaded.metadata.get_input_schema().input_names() == INPUT_COLUMNS
    rows = raw.train[INPUT_COLUMNS].tail(5)
    as_text = rows.astype(str).assign(Date=rows["Date"].dt.strftime("%Y-%m-%d"))  # strings where longs belong
    typed = rows.assign(Date=rows["Date"].dt.strftime("%Y-%m-%d"))
    assert np.asarray(loaded.predict(as_text)).tolist() == np.asarray(loaded.predict(typed)).tolist()
    for column, value in (("Store", "abc"), ("Promo", 3), ("Date", "tomorrow")):
        with pytest.raises(InvalidInputError) as err:
            loaded.predict(typed.assign(**{column: value}))
        assert err.value.field == column
    with pytest.raises(InvalidInputError) as err:
        loaded.predict(typed.drop(columns=["SchoolHoliday"]))
    assert err.value.field == "SchoolHoliday"
