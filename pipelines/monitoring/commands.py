"""`sluice drift` and `sluice feedback`: read, compute (drift.py, feedback.py), write, log, print.

Exit codes: 0 done (no drift, or drift without --fail-on-drift), 1 drift with --fail-on-drift,
2 nothing to compare (no traffic, no reference sample, unknown version, unreadable actuals).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import Settings
from pipelines.monitoring import sources
from pipelines.monitoring.sources import MonitoringError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def run_stamp(now: datetime) -> str:
    """A folder name per run, in time order: microseconds, because two checks in one second (a script,
    a test) must not overwrite each other's reports on the run; no dot, which would read as a suffix."""
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def _push(
    settings: Settings, args: argparse.Namespace, job: str, model: str, version: str, registry: CollectorRegistry
) -> None:
    from pipelines.monitoring.export import push
    from pipelines.platform.pushgateway import target

    gateway = getattr(args, "pushgateway", None) or target(settings)
    if not gateway:
        return
    try:
        push(gateway, job, model, version, registry)
        print(f"pushed to the Pushgateway at {gateway} (job {job})")
    except OSError as exc:
        print(f"warning: could not push to the Pushgateway at {gateway}: {exc}")


def cmd_drift(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _drift(args, settings)
    except MonitoringError as exc:
        print(f"error: {exc}")
        return 2


def _drift(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.monitoring import drift
    from pipelines.monitoring.export import DRIFT_JOB, DriftFigures, drift_registry

    name = args.model or settings.model_name
    span = sources.window(args.since, args.until)
    client = sources.mlflow_client(settings)
    version = sources.resolve(client, name, args.version or "champion")
    reference = sources.load_reference(client, version)
    traffic = sources.read_traffic(settings, name, version.version, span)
    if traffic.empty:
        raise MonitoringError(
            f"no traffic of {name} v{version.version} logged in {span} (s3://{settings.data_bucket}/inference-log/): "
            f"send requests with the payload logger on (`sluice status` shows the receiver), or widen --since/--until"
        )
    thresholds = drift.Thresholds(prediction=args.prediction_threshold, unmatched=args.unmatched_threshold)
    try:
        snapshot, result = drift.run(traffic, reference, thresholds)
    except (drift.NotEnoughTraffic, ValueError) as exc:
        raise MonitoringError(str(exc)) from exc

    now = datetime.now(UTC)
    stamp = run_stamp(now)
    out = Path(args.out or settings.state_dir / "reports")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"drift-{name}-v{version.version}-{stamp}"
    html, report_json, summary = stem.with_suffix(".html"), stem.with_suffix(".json"), Path(f"{stem}.summary.json")
    snapshot.save_html(str(html))
    snapshot.save_json(str(report_json))
    summary.write_text(
        json.dumps(
            {
                "model": name,
                "version": version.version,
                "since": span.since.isoformat(),
                "until": span.until.isoformat(),
            }
            | result.to_dict(),
            indent=2,
        )
    )
    metrics = {
        "drift_prediction_score": result.prediction_score,
        "drift_unmatched_share": result.unmatched_share,
        "drift_share": result.drift_share,
        "drift_detected": 1.0 if result.drifted else 0.0,
    }
    try:
        sources.log_to_run(client, version.run_id, [html, report_json, summary], f"drift/{stamp}", metrics, now)
        logged = f"logged to run {version.run_id} under drift/{stamp}/"
    except Exception as exc:  # the report is on disk either way; say why it is not in MLflow
        logged = f"warning: not logged to MLflow ({type(exc).__name__}: {exc})"
    figures = DriftFigures(
        result.prediction_score,
        result.unmatched_share,
        result.drift_share,
        result.drifted,
        result.compared_rows,
        result.column_scores,
    )

    verdict = "DRIFT" if result.drifted else "no drift"
    print(f"{verdict}: {name} v{version.version}, traffic {span}")
    print(
        f"  {result.rows:,} logged rows, {result.open_rows:,} open, {result.compared_rows:,} compared with "
        f"{result.reference_rows:,} reference rows resampled to the window's DayOfWeek x Promo x holiday-week mix"
    )
    if result.holiday_rows:
        print(f"  {result.holiday_rows:,} open rows of holiday weeks set aside: the reference has no holiday week")
    print(f"  prediction distance {result.prediction_score:.3f} (threshold {thresholds.prediction})")
    print(f"  unmatched share     {result.unmatched_share:.1%} (threshold {thresholds.unmatched:.0%})")
    cols = ", ".join(f"{c} {s:.3f}" for c, s in result.column_scores.items() if c != drift.PREDICTION)
    print(f"  input columns (Jensen-Shannon, reported only): {cols}")
    for reason in result.reasons:
        print(f"  drift: {reason}")
    print(f"  report: {html}")
    print(f"  {logged}")
    _push(settings, args, DRIFT_JOB, name, version.version, drift_registry(name, version.version, figures, time.time()))
    return 1 if result.drifted and args.fail_on_drift else 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _feedback(args, settings)
    except MonitoringError as exc:
        print(f"error: {exc}")
        return 2


def _feedback(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.monitoring import feedback
    from pipelines.monitoring.export import FEEDBACK_JOB, FeedbackFigures, feedback_registry

    name = args.model or settings.model_name
    try:
        actuals = feedback.clean_actuals(sources.read_actuals(settings, str(args.actuals)))
    except feedback.ActualsError as exc:
        raise MonitoringError(str(exc)) from exc
    span = sources.window(args.since, args.until, default_days=35)
    logged = sources.read_traffic(settings, name, None, span)
    result = feedback.realized(logged, actuals)
    if result.joined_rows == 0:
        raise MonitoringError(
            f"none of the {len(actuals):,} actuals ({actuals['Date'].min()}..{actuals['Date'].max()}) with Sales > 0 "
            f"matches a prediction of {name} logged in {span} ({len(logged):,} logged rows): check the store-days, "
            f"or widen --since/--until (the window is when predictions were logged, not the sales dates)"
        )
    client = sources.mlflow_client(settings)
    now = datetime.now(UTC)
    stamp = run_stamp(now)
    out = Path(args.out or settings.state_dir / "reports")
    out.mkdir(parents=True, exist_ok=True)
    print(f"realized RMSPE of {name} (open days with Sales > 0), predictions logged in {span}")
    print(f"  {'version':>8} {'rmspe':>8} {'store-days':>10} {'days':>5}  {'common rmspe':>12} {'common':>7}  range")
    for row in result.per_version.itertuples():
        print(
            f"  {row.version:>8} {row.rmspe:8.4f} {row.rows:10,} {row.days:5}  {row.common_rmspe:12.4f} "
            f"{row.common_rows:7,}  {row.first_day}..{row.last_day}"
        )
    print("  per day:")
    for row in result.per_day.itertuples():
        print(f"  {row.version:>8} {row.Date}  {row.rmspe:8.4f} {row.rows:6,}")
    for row in result.per_version.itertuples():
        version = str(row.version)
        days = result.per_day[result.per_day["version"] == version]
        table = out / f"feedback-{name}-v{version}-{stamp}.csv"
        days.to_csv(table, index=False)
        try:
            run_id = client.get_model_version(name, version).run_id
            sources.log_to_run(
                client,
                run_id,
                [table],
                f"feedback/{stamp}",
                {"realized_rmspe": row.rmspe, "realized_rows": row.rows},
                now,
            )
            for day in days.itertuples():  # one point per sales day, at that day's time
                sources.log_to_run(
                    client,
                    run_id,
                    [],
                    "",
                    {"realized_rmspe_daily": day.rmspe},
                    datetime.fromisoformat(day.Date).replace(tzinfo=UTC),
                )
            print(f"  v{version}: logged to run {run_id} (realized_rmspe, realized_rmspe_daily, feedback/{stamp}/)")
        except Exception as exc:  # a version deleted from the registry, MLflow down: the table is printed anyway
            print(f"  warning: v{version}: not logged to MLflow ({type(exc).__name__}: {exc})")
        _push(
            settings,
            args,
            FEEDBACK_JOB,
            name,
            version,
            feedback_registry(
                name,
                version,
                FeedbackFigures(row.rmspe, row.rows, row.common_rmspe, row.common_rows, stamp),
                time.time(),
            ),
        )
    return 0
