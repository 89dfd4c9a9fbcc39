"""Drift of logged traffic against a version's reference sample: matching, the report, the verdict.

No I/O here: frames in, an evidently snapshot and a `DriftResult` out (pipelines/monitoring/sources.py
reads the log and the registry; commands.py writes files and prints).

Like with like. Rossmann's sales follow the day of the week and promotions (promo weeks alternate
for most stores), so a week of traffic never has the reference's mix of days: compared as they come,
every ordinary week would alarm. Before comparing, the reference is resampled (with replacement,
seeded) so its mix of (DayOfWeek, Promo) cells equals the window's; only open store-days are compared
(a closed day's prediction is 0 by rule). Holidays move sales for the whole week around them (Easter,
Ascension, Whit Monday), so a week with a state holiday forms cells of its own: compared with the
reference's holiday weeks when it has some, else set aside (counted, not judged). What is left to
differ is what the calendar does not explain: the predictions' level and spread, the holiday columns
and the store mix. Traffic in an ordinary cell the reference has no rows for (promotions on a
Saturday) has nothing to be compared with: it is counted as unmatched, and a large unmatched share
is drift of its own.

Verdict (thresholds in `Thresholds`): drift when the prediction's normed Wasserstein distance
exceeds `prediction` or the unmatched share exceeds `unmatched`. Input columns get a score each
(Jensen-Shannon distance, reported and exported) but do not decide alone: after matching, what
moves them is the holiday calendar, which is seasonal rather than drift, and the store mix, which
matters through what the model predicts for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model.schema import INPUT_COLUMNS

STRATA = ("DayOfWeek", "Promo", "holiday week")
HOLIDAY_SHARE = 0.01
# Input columns scored (Date is left out: a later window has other dates by definition).
CATEGORICAL = ["Store", "DayOfWeek", "Promo", "StateHoliday", "SchoolHoliday"]
PREDICTION = "prediction"
COLUMNS = [*CATEGORICAL, PREDICTION]


@dataclass(frozen=True)
class Thresholds:
    prediction: float = 0.25  # normed Wasserstein distance: a shift of a quarter of the reference's std
    column: float = 0.1  # Jensen-Shannon distance above which an input column is reported as drifted
    unmatched: float = 0.05  # share of open rows in (DayOfWeek, Promo) cells the reference lacks
    min_rows: int = 50  # fewer open rows than this: no verdict (the distances are mostly noise)


@dataclass(frozen=True)
class Matched:
    current: pd.DataFrame  # open, complete rows whose cell the reference has
    reference: pd.DataFrame  # the reference resampled to the current's mix of cells
    rows: int  # logged rows in the window
    open_rows: int
    unmatched_rows: int  # open rows in a cell the reference lacks, holiday weeks aside
    holiday_rows: int  # open rows of holiday weeks the reference has no like for: not compared
    mix: dict[str, dict[str, float]]  # cell "dow=1,promo=1[,holiday-week]" -> {"current": .., "reference": ..}

    @property
    def unmatched_share(self) -> float:
        judged = self.open_rows - self.holiday_rows
        return self.unmatched_rows / judged if judged else 0.0


@dataclass(frozen=True)
class DriftResult:
    drifted: bool
    reasons: list[str]
    prediction_score: float
    unmatched_share: float
    holiday_rows: int
    column_scores: dict[str, float]
    drifted_columns: list[str]
    rows: int
    open_rows: int
    compared_rows: int
    reference_rows: int
    thresholds: Thresholds
    mix: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def drift_share(self) -> float:
        """Share of scored input columns over their threshold (the dashboard's figure)."""
        inputs = [c for c in self.column_scores if c != PREDICTION]
        return len([c for c in inputs if c in self.drifted_columns]) / len(inputs) if inputs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"drift_share": self.drift_share}


class NotEnoughTraffic(ValueError):
    """Too few logged rows to say anything; the message says how many and what to do."""


def clean_traffic(log: pd.DataFrame) -> pd.DataFrame:
    """Logged rows with every input and a prediction, typed like the reference sample.

    A request whose response never came has no prediction; a response stored without its request has
    no inputs: neither can be compared. Inputs are cast to the training types (a client may send
    Store as a string).
    """
    needed = [*INPUT_COLUMNS, PREDICTION]
    missing = [c for c in needed if c not in log.columns]
    if missing:
        raise ValueError(f"the logged traffic has no column {missing}: is it traffic of this model?")
    frame = log[needed].dropna()
    frame = frame.astype(
        {"Store": "int64", "DayOfWeek": "int64", "Open": "int64", "Promo": "int64", "SchoolHoliday": "int64"}
    )
    frame["StateHoliday"] = frame["StateHoliday"].astype(str)
    frame["Date"] = frame["Date"].astype(str)
    frame[PREDICTION] = frame[PREDICTION].astype("float64")
    return frame.reset_index(drop=True)


def holiday_weeks(frame: pd.DataFrame, min_share: float = HOLIDAY_SHARE) -> pd.Series:
    """True for rows in a Monday..Sunday week with a holiday: a date on which at least `min_share` of
    the frame's store-days are state holidays (national or regional). Judged per date, not per store,
    so that a sample (the reference) that lacks a store's holiday row still flags its week."""
    day = pd.to_datetime(frame["Date"])
    share = (frame["StateHoliday"] != "0").groupby(frame["Date"]).mean()
    holiday_dates = pd.to_datetime(pd.Series(share[share >= min_share].index, dtype="object"))
    monday = day - pd.to_timedelta(day.dt.dayofweek, unit="D")
    holiday_mondays = set(holiday_dates - pd.to_timedelta(holiday_dates.dt.dayofweek, unit="D"))
    return monday.isin(holiday_mondays)


def _cell(frame: pd.DataFrame, holiday: pd.Series) -> pd.Series:
    cell = "dow=" + frame["DayOfWeek"].astype(str) + ",promo=" + frame["Promo"].astype(str)
    return cell + np.where(holiday.loc[frame.index], ",holiday-week", "")


def match(current: pd.DataFrame, reference: pd.DataFrame, seed: int = 0) -> Matched:
    """Open rows of both; the reference resampled to the current's (DayOfWeek, Promo, holiday week) mix.

    Each reference row in cell c gets weight share_current(c) / share_reference(c); as many rows as
    the reference has are drawn by those weights, so the draw's mix is the current one (up to
    sampling) while every reference row of a cell stays equally likely. Holiday-week rows whose cell
    the reference lacks are set aside (counted in `holiday_rows`), not counted as unmatched.
    """
    current, reference = current.reset_index(drop=True), reference.reset_index(drop=True)
    cur_holiday, ref_holiday = holiday_weeks(current), holiday_weeks(reference)
    cur_open = current[current["Open"] == 1]
    ref_open = reference[reference["Open"] == 1]
    cur_cells, ref_cells = _cell(cur_open, cur_holiday), _cell(ref_open, ref_holiday)
    cur_share = cur_cells.value_counts(normalize=True)
    ref_share = ref_cells.value_counts(normalize=True)
    known = cur_cells.isin(ref_share.index)
    set_aside = ~known & cur_holiday.loc[cur_open.index]
    matched_current = cur_open[known]
    mix = {
        str(c): {"current": float(cur_share.get(c, 0.0)), "reference": float(ref_share.get(c, 0.0))}
        for c in sorted(set(cur_share.index) | set(ref_share.index))
    }
    if matched_current.empty:
        resampled = ref_open.iloc[0:0]
    else:
        target = cur_cells[known].value_counts(normalize=True)
        weights = ref_cells.map(target).fillna(0.0) / ref_cells.map(ref_share)
        rng = np.random.default_rng(seed)
        p = weights.to_numpy(dtype="float64")
        picked = rng.choice(len(ref_open), size=len(ref_open), replace=True, p=p / p.sum())
        resampled = ref_open.iloc[np.sort(picked)]
    return Matched(
        current=matched_current.reset_index(drop=True),
        reference=resampled.reset_index(drop=True),
        rows=len(current),
        open_rows=len(cur_open),
        unmatched_rows=int((~known & ~set_aside).sum()),
        holiday_rows=int(set_aside.sum()),
        mix=mix,
    )


def build_report(matched: Matched, thresholds: Thresholds) -> Any:
    """The evidently snapshot: data drift per input column and prediction drift, on matched rows."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(categorical_columns=CATEGORICAL, numerical_columns=[PREDICTION])

    def dataset(frame: pd.DataFrame) -> Any:
        return Dataset.from_pandas(frame[COLUMNS].reset_index(drop=True), data_definition=definition)

    preset = DataDriftPreset(
        columns=COLUMNS,
        cat_method="jensenshannon",
        num_method="wasserstein",
        cat_threshold=thresholds.column,
        num_threshold=thresholds.prediction,
    )
    return Report([preset]).run(dataset(matched.current), dataset(matched.reference))


def scores(snapshot_dict: dict[str, Any]) -> dict[str, float]:
    """Column -> drift score, read from the snapshot's ValueDrift metrics."""
    out: dict[str, float] = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift") and config.get("column") in COLUMNS:
            out[str(config["column"])] = float(metric["value"])
    return out


def decide(matched: Matched, column_scores: dict[str, float], thresholds: Thresholds) -> DriftResult:
    prediction = column_scores.get(PREDICTION, 0.0)
    reasons = []
    if prediction > thresholds.prediction:
        reasons.append(f"prediction distance {prediction:.3f} > {thresholds.prediction}")
    if matched.unmatched_share > thresholds.unmatched:
        reasons.append(
            f"{matched.unmatched_share:.1%} of open rows in (DayOfWeek, Promo) cells the reference lacks "
            f"> {thresholds.unmatched:.0%}"
        )
    drifted_columns = [
        c for c, s in column_scores.items() if s > (thresholds.prediction if c == PREDICTION else thresholds.column)
    ]
    return DriftResult(
        drifted=bool(reasons),
        reasons=reasons,
        prediction_score=prediction,
        unmatched_share=matched.unmatched_share,
        holiday_rows=matched.holiday_rows,
        column_scores=column_scores,
        drifted_columns=drifted_columns,
        rows=matched.rows,
        open_rows=matched.open_rows,
        compared_rows=len(matched.current),
        reference_rows=len(matched.reference),
        thresholds=thresholds,
        mix=matched.mix,
    )


def run(
    current: pd.DataFrame, reference: pd.DataFrame, thresholds: Thresholds | None = None
) -> tuple[Any, DriftResult]:
    """Clean, match, report, decide: (evidently snapshot, result). NotEnoughTraffic below min_rows."""
    thresholds = thresholds or Thresholds()
    matched = match(clean_traffic(current), reference)
    if len(matched.current) < thresholds.min_rows:
        raise NotEnoughTraffic(
            f"{matched.rows} logged rows, {len(matched.current)} of them open and comparable"
            + (
                f" ({matched.holiday_rows} in holiday weeks, which the reference has no like for)"
                if matched.holiday_rows
                else ""
            )
            + f": a drift check needs at least {thresholds.min_rows}; widen the window (--since/--until)"
            " or send more traffic"
        )
    snapshot = build_report(matched, thresholds)
    return snapshot, decide(matched, scores(snapshot.dict()), thresholds)
