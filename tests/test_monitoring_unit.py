"""Fast tests of pipelines/monitoring: like-with-like matching, the drift verdict, windows, exports."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from monitoring_helpers import traffic
from prometheus_client import generate_latest

from pipelines.cli import build_parser
from pipelines.monitoring import drift, export, feedback, sources

# The reference: six weeks (three promo weeks, three without), as a holdout window would be.
REFERENCE = traffic("2015-06-01", 42, seed=1)


def test_match_resamples_the_reference_to_the_windows_mix() -> None:
    week = traffic("2015-07-13", 7, seed=2)  # ISO week 29: no promo
    matched = drift.match(drift.clean_traffic(week), REFERENCE)
    assert matched.unmatched_rows == 0 and matched.open_rows == len(week[week["Open"] == 1])
    # The resampled reference has the week's cells (no promo at all) in the week's shares.
    assert (matched.reference["Promo"] == 0).all() and (matched.reference["Open"] == 1).all()
    cur = matched.current["DayOfWeek"].value_counts(normalize=True).sort_index()
    ref = matched.reference["DayOfWeek"].value_counts(normalize=True).sort_index()
    assert np.allclose(cur.to_numpy(), ref.to_numpy(), atol=0.03)
    assert matched.mix["dow=1,promo=1"] == {"current": 0.0, "reference": pytest.approx(3 / 36, abs=0.01)}
    # Seeded: the same inputs give the same draw.
    assert matched.reference.equals(drift.match(drift.clean_traffic(week), REFERENCE).reference)


@pytest.mark.parametrize("start", ["2015-07-13", "2015-07-20", "2015-08-03"])  # weeks without and with promo
def test_ordinary_weeks_do_not_alarm_but_would_without_matching(start: str) -> None:
    week = traffic(start, 7, seed=3)
    _, result = drift.run(week, REFERENCE)
    assert not result.drifted, result.reasons
    assert result.prediction_score < 0.08 and result.unmatched_share == 0.0
    # Compared as they come, the same week's predictions sit far from the six-week mix.
    from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm

    ref_open, cur_open = REFERENCE[REFERENCE["Open"] == 1], week[week["Open"] == 1]
    naive, _ = _wasserstein_distance_norm(ref_open["prediction"], cur_open["prediction"], "num", 0.1)
    assert naive > drift.Thresholds().prediction


def test_a_shifted_sales_level_is_prediction_drift() -> None:
    week = traffic("2015-07-20", 7, seed=4)
    week["prediction"] *= 1.2
    snapshot, result = drift.run(week, REFERENCE)
    assert result.drifted and result.prediction_score > 0.25
    assert "prediction" in result.drifted_columns and result.reasons[0].startswith("prediction distance")
    # The figures come from evidently's own snapshot.
    assert drift.scores(snapshot.dict())["prediction"] == result.prediction_score


def test_promotions_on_other_days_are_unmatched_drift() -> None:
    week = traffic("2015-07-20", 7, seed=5, promo_weekday={4, 5, 6})  # Thursday to Saturday, every week
    _, result = drift.run(week, REFERENCE)
    assert result.drifted
    assert result.unmatched_share == pytest.approx(1 / 6, abs=0.01)  # the Saturday promo rows
    assert any("cells the reference lacks" in r for r in result.reasons)


def test_holiday_weeks_are_compared_only_with_holiday_weeks() -> None:
    # Whit Monday 2015-05-25: its week (Monday..Sunday) is a holiday week; the reference has none.
    weeks = traffic("2015-05-18", 14, seed=12)
    whit = weeks["Date"] == "2015-05-25"
    weeks.loc[whit, ["StateHoliday", "Open", "prediction"]] = ["a", 0, 0.0]
    in_week = weeks["Date"].between("2015-05-25", "2015-05-31")
    weeks.loc[in_week & ~whit, "prediction"] *= 1.4  # the shopping around a holiday
    assert drift.holiday_weeks(weeks).equals(in_week)
    _, result = drift.run(weeks, REFERENCE)
    open_in_week = int((in_week & (weeks["Open"] == 1)).sum())
    assert result.holiday_rows == open_in_week and result.unmatched_share == 0.0
    assert not result.drifted and result.compared_rows == int((~in_week & (weeks["Open"] == 1)).sum())
    # Only the holiday week: nothing comparable, and the message says why.
    with pytest.raises(drift.NotEnoughTraffic, match="in holiday weeks"):
        drift.run(weeks[in_week], REFERENCE)
    # A reference with holiday weeks compares them, and finds the 40% bump.
    _, result = drift.run(
        weeks[in_week],
        pd.concat([REFERENCE, weeks[in_week].assign(prediction=lambda d: d["prediction"] / 1.4, Sales=0)]),
    )
    assert result.holiday_rows == 0 and result.compared_rows == open_in_week and result.drifted


def test_incomplete_rows_are_dropped_and_too_few_rows_refused() -> None:
    week = traffic("2015-07-20", 7, seed=6)
    week.loc[week.index[:10], "prediction"] = np.nan  # requests whose response never came
    week["Store"] = week["Store"].astype(str)  # a client that sent strings
    clean = drift.clean_traffic(week)
    assert len(clean) == len(week) - 10 and clean["Store"].dtype == "int64"
    with pytest.raises(drift.NotEnoughTraffic, match="needs at least 50"):
        drift.run(week.head(30), REFERENCE)
    with pytest.raises(ValueError, match="no column"):
        drift.clean_traffic(week.drop(columns=["Promo"]))


def test_window_defaults_and_errors() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    span = sources.window(None, None, now=now)
    assert span.until == now and (span.until - span.since).days == 7
    assert sources.window("2026-11-01", "2026-11-02").since == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(sources.MonitoringError, match="--since"):
        sources.window("2026-11-02", "2026-11-01")
    with pytest.raises(sources.MonitoringError, match="not an ISO date"):
        sources.window("yesterday", None)


def test_drift_figures_in_prometheus_text_format() -> None:
    figures = export.DriftFigures(0.25, 0.01, 0.2, True, 1234, {"Store": 0.05, "prediction": 0.25})
    text = generate_latest(export.drift_registry("rossmann", "3", figures, 1.7e9)).decode()
    assert 'sluice_drift_prediction_score{model="rossmann",version="3"} 0.25' in text
    assert 'sluice_drift_detected{model="rossmann",version="3"} 1.0' in text
    assert 'sluice_drift_column_score{column="Store",model="rossmann",version="3"} 0.05' in text


def test_cli_parses_drift() -> None:
    args = build_parser().parse_args(
        ["drift", "--model", "m", "--version", "2", "--since", "2026-11-01", "--fail-on-drift"]
    )
    assert args.fail_on_drift and args.version == "2" and args.prediction_threshold == drift.Thresholds().prediction


def test_traffic_helper_has_the_cycles() -> None:
    frame = traffic("2015-06-01", 14)
    assert set(frame.loc[frame["DayOfWeek"] == 7, "Open"]) == {0}
    assert frame.groupby("Date")["Promo"].max().sum() == 5  # one promo week of two
    assert isinstance(frame["Date"].iloc[0], str) and pd.Timestamp(frame["Date"].iloc[0]).dayofweek == 0


def _logged(frame: pd.DataFrame, version: str, at: str) -> pd.DataFrame:
    return frame.assign(version=version, received_at=pd.Timestamp(at, tz="UTC"))


def test_realized_rmspe_equals_a_direct_computation() -> None:
    days = traffic("2015-07-20", 7, seed=11)
    rng = np.random.default_rng(0)
    sales = (days["prediction"] * rng.lognormal(0, 0.1, len(days))).round()
    sales[rng.random(len(days)) < 0.05] = 0  # open days without sales: not scored
    actuals = feedback.clean_actuals(days[["Store", "Date"]].assign(Sales=sales.astype(int).astype(str)))
    stable = _logged(days, "1", "2026-11-20")
    canary = _logged(
        days.sample(frac=0.3, random_state=1).assign(prediction=lambda d: d["prediction"] * 1.05), "2", "2026-11-20"
    )
    asked_twice = _logged(
        days.head(40).assign(prediction=1.0), "1", "2026-11-19"
    )  # older: replaced by the later answer
    result = feedback.realized(pd.concat([asked_twice, stable, canary]), actuals)

    def direct(pred: pd.Series, truth: pd.Series) -> float:
        keep = truth.to_numpy() > 0
        p, t = pred.to_numpy()[keep], truth.to_numpy()[keep]
        return float(np.sqrt(np.mean(((t - p) / t) ** 2)))

    v1 = result.per_version.set_index("version")
    assert v1.loc["1", "rmspe"] == pytest.approx(direct(stable["prediction"], sales), rel=1e-12)
    assert v1.loc["1", "rows"] == int((sales > 0).sum())
    c = canary.merge(actuals, on=["Store", "Date"])
    assert v1.loc["2", "rmspe"] == pytest.approx(direct(c["prediction"], c["Sales"]), rel=1e-12)
    # On the store-days both served, like with like.
    s = stable.merge(c[["Store", "Date"]], on=["Store", "Date"]).merge(actuals, on=["Store", "Date"])
    assert v1.loc["1", "common_rmspe"] == pytest.approx(direct(s["prediction"], s["Sales"]), rel=1e-12)
    assert v1.loc["2", "common_rows"] == v1.loc["1", "common_rows"] == v1.loc["2", "rows"]
    # Per day.
    monday = result.per_day[(result.per_day["version"] == "1") & (result.per_day["Date"] == "2015-07-20")].iloc[0]
    m = stable[stable["Date"] == "2015-07-20"]
    assert monday["rmspe"] == pytest.approx(direct(m["prediction"], sales[m.index]), rel=1e-12)
    assert set(result.per_day["Date"]) == set(days.loc[sales > 0, "Date"])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"Store": ["1"], "Date": ["2015-07-01"]}), "no column \\['Sales'\\]"),
        (pd.DataFrame({"Store": ["x"], "Date": ["2015-07-01"], "Sales": ["1"]}), "Store 'x' is not a number"),
        (pd.DataFrame({"Store": ["1"], "Date": ["07/01/2015"], "Sales": ["1"]}), "Date '07/01/2015'"),
        (pd.DataFrame({"Store": ["1", "1"], "Date": ["2015-07-01"] * 2, "Sales": ["1", "2"]}), "more than once"),
    ],
)
def test_bad_actuals_are_named(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(feedback.ActualsError, match=message):
        feedback.clean_actuals(frame)


def test_no_match_gives_an_empty_result() -> None:
    days = traffic("2015-07-20", 2)
    actuals = feedback.clean_actuals(pd.DataFrame({"Store": ["1"], "Date": ["2014-01-01"], "Sales": ["100"]}))
    assert feedback.realized(_logged(days, "1", "2026-11-20"), actuals).joined_rows == 0


def test_two_checks_in_one_second_get_their_own_report_folders() -> None:
    from datetime import UTC, datetime

    from pipelines.monitoring.commands import run_stamp

    first = run_stamp(datetime(2026, 11, 30, 11, 58, 0, 1000, tzinfo=UTC))
    second = run_stamp(datetime(2026, 11, 30, 11, 58, 0, 2000, tzinfo=UTC))
    assert first != second and first < second and "." not in first
