"""Where `sluice drift`'s thresholds come from: its figures, week by week, on the real Rossmann data.

Trains a quick-preset model on everything before --cut (its reference sample is the 42 days before
it), predicts the real store-days of every Monday..Sunday week after it, and runs the drift check
(pipelines/monitoring/drift.py) on each week as it is, then on two weeks with the predictions scaled
(a sales level that moved) and with promotions added on Saturdays (a new promo pattern). Prints the
prediction distance, the unmatched share, the holiday-week rows set aside, the verdict and the time
of each check (evidently's first import is paid before the first one).

    ROSSMANN_DATA_DIR=... uv run python benchmarks/drift_calibration.py [--cut 2015-03-01]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import pandas as pd

from model.data import RawData, load_raw
from model.inputs import Requests
from model.schema import INPUT_COLUMNS
from model.training import TrainConfig, train
from pipelines.monitoring import drift


def _as_logged(rows: pd.DataFrame, predictions: pd.Series) -> pd.DataFrame:
    out = rows[INPUT_COLUMNS].copy()
    out["Date"] = out["Date"].dt.strftime("%Y-%m-%d")
    out["StateHoliday"] = out["StateHoliday"].astype(str)
    out["prediction"] = predictions.to_numpy()
    return out


def _check(label: str, week: pd.DataFrame, reference: pd.DataFrame) -> None:
    started = time.perf_counter()
    try:
        _, r = drift.run(week, reference)
    except drift.NotEnoughTraffic:
        print(f"{label:<28} no verdict: every open row is in a holiday week the reference has no like for")
        return
    print(
        f"{label:<28} {r.open_rows:>6} {r.holiday_rows:>8} {r.prediction_score:>10.3f} {r.unmatched_share:>10.3f} "
        f"{'DRIFT' if r.drifted else '-':>7} {time.perf_counter() - started:>6.1f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("ROSSMANN_DATA_DIR"))
    parser.add_argument("--cut", default="2015-03-01", help="train before this date; check the weeks after it")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir or ROSSMANN_DATA_DIR: the Kaggle Rossmann train.csv and store.csv")
    logging.disable(logging.WARNING)
    full = load_raw(Path(args.data_dir))
    cut = pd.Timestamp(args.cut)
    trained = train(
        RawData(full.train[full.train["Date"] < cut], full.store, "calibration"), TrainConfig.quick(), False
    )
    assert trained.reference is not None
    reference = trained.reference
    later = full.train[full.train["Date"] >= cut]
    logged = _as_logged(later, pd.Series(trained.forecaster.predict(Requests.from_frame(later)), index=later.index))
    days = pd.to_datetime(logged["Date"])
    print(f"reference {trained.windows['valid_start']}..{trained.windows['valid_end']}, {len(reference)} rows")
    print(f"{'week':<28} {'open':>6} {'holiday':>8} {'prediction':>10} {'unmatched':>10} {'verdict':>7} {'time':>7}")
    monday = cut + pd.Timedelta(days=(7 - cut.dayofweek) % 7)
    first_two: list[pd.DataFrame] = []
    while monday <= days.max():
        week = logged[(days >= monday) & (days < monday + pd.Timedelta(days=7))]
        _check(str(monday.date()), week, reference)
        if not drift.holiday_weeks(week).any() and len(first_two) < 2:
            first_two.append(week)
        monday += pd.Timedelta(days=7)
    for week in first_two:
        start = week["Date"].min()
        for scale in (1.05, 1.10, 1.15, 1.20):
            _check(f"{start} x{scale:.2f}", week.assign(prediction=week["prediction"] * scale), reference)
        saturday_promos = week.assign(Promo=week["Promo"].where(week["DayOfWeek"] != 6, 1))
        _check(f"{start} Saturday promos", saturday_promos, reference)


if __name__ == "__main__":
    main()
