"""`sluice forecast`: batch forecasts from a registered version, loaded by the same code as the runtime.

Two inputs:
- `--rows FILE`: Kaggle's test.csv format (Id optional); the output keeps every row, and with Id it
  is also the competition's submission (`Id,Sales`, `--submission PATH`).
- `--start DATE --days N [--stores 1,2,...]`: every store's next N days. The future calendar
  columns are assumptions, said on every run: open every day but Sunday, no promotion, no state or
  school holiday. A person who knows the promotion plan passes it as `--rows`.
The output is Parquet or CSV (by its suffix), on the local disk or `s3://` (the data bucket, through
the project's S3 client); `--plot PNG` draws history (from `--data-dir`, when given) and forecast
for a few stores.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Settings

log = logging.getLogger("sluice")

MAX_DAYS = 366  # beyond this the calendar tables of a model may not reach; a year is plenty
CHUNK_ROWS = 50_000  # rows per predict call: bounded memory and a progress bar that moves
PLOT_STORES = 4


class ForecastError(ValueError):
    """A bad argument or input file; the message says which and what to do."""


@dataclass(frozen=True)
class Horizon:
    start: pd.Timestamp
    days: int
    stores: list[int] | None  # None: every store the model knows


def horizon_rows(stores: list[int], horizon: Horizon) -> pd.DataFrame:
    """The request rows for every store and day of the horizon, with the documented assumptions."""
    dates = pd.date_range(horizon.start, periods=horizon.days, freq="D")
    grid = pd.MultiIndex.from_product([stores, dates], names=["Store", "Date"]).to_frame(index=False)
    dow = grid["Date"].dt.dayofweek + 1  # Kaggle: Monday 1 .. Sunday 7
    return pd.DataFrame(
        {
            "Store": grid["Store"].astype("int64"),
            "DayOfWeek": dow.astype("int64"),
            "Date": grid["Date"].dt.strftime("%Y-%m-%d"),
            "Open": (dow != 7).astype("int64"),
            "Promo": np.zeros(len(grid), dtype="int64"),
            "StateHoliday": "0",
            "SchoolHoliday": np.zeros(len(grid), dtype="int64"),
        }
    )


def read_rows(path: Path) -> pd.DataFrame:
    """Kaggle's test.csv (plain or .gz): the model's input columns, plus Id when present."""
    from model.schema import INPUT_COLUMNS

    if not path.is_file():
        raise ForecastError(f"--rows {path}: no such file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ForecastError(f"--rows {path}: missing columns {missing}; expected Kaggle's test.csv columns")
    ints = ["Store", "DayOfWeek", "Promo", "SchoolHoliday"]
    for col in ints:
        bad = ~frame[col].str.fullmatch(r"\d+")
        if bad.any():
            raise ForecastError(f"--rows {path}: column {col} row {int(np.argmax(bad))} is not an integer")
    out = frame[[*(["Id"] if "Id" in frame.columns else []), *INPUT_COLUMNS]].copy()
    out[ints] = out[ints].astype("int64")
    if "Id" in out.columns and out["Id"].str.fullmatch(r"\d+").all():
        out["Id"] = out["Id"].astype("int64")  # sorted as numbers in the submission
    # Kaggle's test.csv leaves Open blank on a few days of one store: the model reads a blank as open.
    out["Open"] = pd.to_numeric(out["Open"].replace("", np.nan), errors="coerce").fillna(1).astype("int64")
    return out


def predict_in_chunks(model: Any, rows: pd.DataFrame, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    from model.schema import INPUT_COLUMNS

    inputs = rows[INPUT_COLUMNS]
    parts = []
    with tqdm(total=len(inputs), unit="row", desc="forecast", disable=not progress, file=sys.stderr) as bar:
        for begin in range(0, len(inputs), CHUNK_ROWS):
            chunk = inputs.iloc[begin : begin + CHUNK_ROWS]
            parts.append(np.asarray(model.predict(chunk), dtype="float64"))
            bar.update(len(chunk))
    return np.concatenate(parts) if parts else np.zeros(0)


def write_table(frame: pd.DataFrame, target: str, settings: Settings) -> str:
    """Parquet or CSV by suffix; `s3://bucket/key` through the project's S3 client."""
    suffix = Path(target.split("?", 1)[0]).suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ForecastError(f"--out {target}: name a .parquet or .csv file")
    buf = io.BytesIO()
    if suffix == ".parquet":
        frame.to_parquet(buf, index=False)
    else:
        buf.write(frame.to_csv(index=False).encode())
    if target.startswith("s3://"):
        from pipelines.registry import s3_client, split_s3

        bucket, key = split_s3(target)
        s3_client(settings).put_object(Bucket=bucket, Key=key.rstrip("/"), Body=buf.getvalue())
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(buf.getvalue())
    return target


def plot(forecast: pd.DataFrame, history: pd.DataFrame | None, stores: list[int], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(stores), 1, figsize=(10, 2.4 * len(stores)), sharex=True, squeeze=False)
    for ax, store in zip(axes[:, 0], stores, strict=True):
        f = forecast[forecast["Store"] == store]
        if history is not None:
            h = history[(history["Store"] == store) & (history["Date"] >= f["Date"].min() - pd.Timedelta(days=90))]
            ax.plot(h["Date"], h["Sales"], color="#777777", linewidth=1, label="actual")
        ax.plot(f["Date"], f["Sales"], color="#d9480f", linewidth=1.5, label="forecast")
        ax.set_ylabel(f"store {store}")
        ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse_stores(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        stores = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ForecastError(f"--stores {text!r}: expected store ids separated by commas, e.g. 1,2,15") from None
    if not stores or stores[0] < 1:
        raise ForecastError(f"--stores {text!r}: store ids are positive integers")
    return stores


RELATIVE_STARTS = {"today": 0, "tomorrow": 1}  # what a scheduled job (gitops/platform/jobs.yaml) passes


def _horizon(args: argparse.Namespace, today: date | None = None) -> Horizon:
    if args.start in RELATIVE_STARTS:
        day = (today or datetime.now(UTC).date()) + timedelta(days=RELATIVE_STARTS[args.start])
        return _horizon(argparse.Namespace(**{**vars(args), "start": day.isoformat()}))
    try:
        start = pd.Timestamp(args.start)
    except ValueError:
        raise ForecastError(f"--start {args.start!r}: expected a date such as 2015-08-01, or today|tomorrow") from None
    if not 1 <= args.days <= MAX_DAYS:
        raise ForecastError(f"--days {args.days}: expected 1..{MAX_DAYS}")
    return Horizon(start.normalize(), args.days, _parse_stores(args.stores))


def cmd_forecast(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.train import configure

    configure(settings)
    try:
        return _forecast(args, settings)
    except ForecastError as e:
        print(f"sluice forecast: {e}", file=sys.stderr)
        return 2


def _forecast(args: argparse.Namespace, settings: Settings) -> int:
    import mlflow.pyfunc

    if (args.rows is None) == (args.start is None):
        raise ForecastError("give either --rows FILE (Kaggle's test.csv format) or --start DATE --days N")
    horizon = _horizon(args) if args.start is not None else None
    rows = read_rows(args.rows) if args.rows is not None else None
    model_name = args.model or settings.model_name
    ref = args.version or args.alias or "champion"
    uri = f"models:/{model_name}/{ref}" if str(ref).isdigit() else f"models:/{model_name}@{ref}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as e:  # MLflow raises its own exception types for every lookup failure
        raise ForecastError(
            f"cannot load {uri}: {str(e).splitlines()[0]}; `sluice status` lists the registered versions"
        ) from None
    known = _known_stores(model)
    if horizon is not None:
        stores = horizon.stores or known
        unknown = sorted(set(stores) - set(known)) if known else []
        if unknown:
            raise ForecastError(f"--stores: the model does not know stores {unknown[:10]}")
        rows = horizon_rows(stores, horizon)
        print(
            f"[{model_name}] {len(stores)} stores x {horizon.days} days from {horizon.start.date()}; assumed: open "
            "every day but Sunday, no promotion, no holidays (pass --rows for the real plan)",
            file=sys.stderr,
        )
    assert rows is not None
    try:
        sales = predict_in_chunks(model, rows, progress=not args.quiet)
    except ValueError as e:  # the model's own input check names the column (model.errors)
        raise ForecastError(f"the model refused the rows: {e}") from None
    result = rows.assign(Sales=sales.round(2))
    # A scheduled job names one file per run: {start} is the horizon's first day (or today, for --rows).
    first = horizon.start.date() if horizon is not None else datetime.now(UTC).date()
    written = write_table(result, args.out.replace("{start}", first.isoformat()), settings)
    print(f"[{model_name}] {len(result)} forecasts ({uri}) -> {written}")
    if args.submission:
        if "Id" not in result.columns:
            raise ForecastError("--submission needs --rows with Kaggle's Id column")
        result[["Id", "Sales"]].sort_values("Id").to_csv(args.submission, index=False)
        print(f"[{model_name}] Kaggle submission -> {args.submission}")
    if args.plot:
        dated = result.assign(Date=pd.to_datetime(result["Date"]))
        history = _history(args, settings)
        chosen = sorted(dated["Store"].unique())[:PLOT_STORES]
        path = plot(dated, history, chosen, Path(args.plot), f"{model_name} {ref}: forecast")
        print(f"[{model_name}] plot of stores {chosen} -> {path}")
    return 0


def _known_stores(model: Any) -> list[int]:
    """The stores the version's own tables know (empty when it is not this project's pyfunc)."""
    try:
        tables = model.unwrap_python_model().forecaster.tables
    except Exception:  # another kind of pyfunc: let its predict judge the stores
        return []
    return [int(s) for s in tables.store_ids]


def _history(args: argparse.Namespace, settings: Settings) -> pd.DataFrame | None:
    data_dir = args.data_dir or settings.data_dir
    if data_dir is None:
        return None
    from model.data import load_raw

    return load_raw(Path(data_dir)).train[["Store", "Date", "Sales"]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--version", default=None, help="version number")
    ref.add_argument("--alias", default=None, help="alias (default champion)")
    p.add_argument("--rows", type=Path, default=None, help="rows to forecast, Kaggle's test.csv format (.csv/.gz)")
    p.add_argument(
        "--start",
        default=None,
        help="first day of the horizon (YYYY-MM-DD, today or tomorrow, UTC), instead of --rows",
    )
    p.add_argument("--days", type=int, default=42, help="days in the horizon (default 42)")
    p.add_argument("--stores", default=None, help="store ids, comma-separated (default: every store the model knows)")
    p.add_argument(
        "--out",
        required=True,
        help="output .parquet or .csv: a path or s3://bucket/key; {start} in it is replaced by the first day",
    )
    p.add_argument("--submission", type=Path, default=None, help="also write Kaggle's Id,Sales file (needs --rows)")
    p.add_argument("--plot", type=Path, default=None, help="PNG of history (with --data-dir) and forecast")
    p.add_argument("--data-dir", type=Path, default=None, help="Kaggle-format data for the plot's history")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
