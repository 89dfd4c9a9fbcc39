"""Rolling-origin backtests: how the training settings forecast 42-day windows they have never seen.

Each window is scored by a model fitted only on the data before it (store statistics included), the
way the registered model forecasts the days after its data. The windows avoid the data's last
`holdout_days`, which stay unseen by every choice made here: training scores its holdout model
there, and the evaluation gate compares versions there (model/training.py, model/evaluation.py).

Default windows, for data ending on day E (holdout E-41..E):
- the 42 days just before the holdout;
- the same season a year earlier, for the holdout and for the 84 days after E (the weeks a model
  trained on this data will forecast): school summer holidays differ by state and by year, and one
  window in late spring says little about the summer after it.
Windows with less than `min_train_days` of data before them are skipped.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from model.data import RawData, fingerprint
from model.features import feature_matrix
from model.inputs import Requests
from model.metrics import rmspe
from model.selection import Selection
from model.training import TrainConfig, fit

log = logging.getLogger(__name__)

WINDOW_DAYS = 42
YEAR = pd.Timedelta(days=365)


@dataclass(frozen=True)
class Window:
    name: str
    start: pd.Timestamp
    end: pd.Timestamp  # inclusive

    @property
    def label(self) -> str:
        return f"{self.start.date()}..{self.end.date()}"


def default_windows(raw: RawData, holdout_days: int = 42, min_train_days: int = 270) -> list[Window]:
    """The backtest windows for `raw` (see the module docstring), oldest first."""
    end = raw.last_date
    day = pd.Timedelta(days=1)
    holdout_start = end - (holdout_days - 1) * day
    span = (WINDOW_DAYS - 1) * day
    candidates = [
        Window("holdout season, a year earlier", holdout_start - YEAR, holdout_start - YEAR + span),
        Window("next 42 days, a year earlier", end + day - YEAR, end + day - YEAR + span),
        Window("the 42 days after those, a year earlier", end + 43 * day - YEAR, end + 43 * day - YEAR + span),
        Window("before the holdout", holdout_start - WINDOW_DAYS * day, holdout_start - day),
    ]
    usable = [
        w
        for w in candidates
        if w.end < holdout_start and (w.start - raw.first_date).days >= min_train_days and w.start <= w.end
    ]
    return sorted(usable, key=lambda w: w.start)


@dataclass(frozen=True)
class WindowResult:
    window: str
    name: str
    train_end: str
    open_days: int  # days with Sales > 0: what RMSPE is computed on
    rmspe: float  # at the configured rounds
    by_rounds: dict[int, float]  # RMSPE at each checkpoint
    by_week: list[float]  # RMSPE per week of horizon (days 1-7, 8-14, ...) at the configured rounds
    seconds: float


@dataclass(frozen=True)
class BacktestReport:
    config: TrainConfig
    data: str
    results: list[WindowResult]

    @property
    def rmspe_mean(self) -> float:
        return float(np.mean([r.rmspe for r in self.results]))

    @property
    def rmspe_std(self) -> float:
        return float(np.std([r.rmspe for r in self.results]))

    def mean_by_rounds(self) -> dict[int, float]:
        rounds = sorted(self.results[0].by_rounds)
        return {r: float(np.mean([res.by_rounds[r] for res in self.results])) for r in rounds}

    def best_rounds(self) -> int:
        """The checkpoint with the lowest mean RMSPE over the windows."""
        means = self.mean_by_rounds()
        return min(means, key=lambda r: (means[r], r))

    def mean_by_week(self) -> list[float]:
        weeks = min(len(r.by_week) for r in self.results)
        return [float(np.mean([r.by_week[k] for r in self.results])) for k in range(weeks)]

    def selection(self, selection_id: str, command: str = "") -> Selection:
        """The settings these backtests choose: the configured ones with the best mean rounds."""
        rounds = self.best_rounds()
        at_best = [r.by_rounds[rounds] for r in self.results]
        chosen = replace(self.config, rounds=rounds)
        return Selection(
            id=selection_id,
            config=chosen.selected_settings(),
            windows=[r.window for r in self.results],
            rmspe_mean=float(np.mean(at_best)),
            rmspe_std=float(np.std(at_best)),
            per_window={r.window: v for r, v in zip(self.results, at_best, strict=True)},
            data=self.data,
            command=command,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "data": self.data,
            "rmspe_mean": self.rmspe_mean,
            "rmspe_std": self.rmspe_std,
            "best_rounds": self.best_rounds(),
            "mean_by_rounds": self.mean_by_rounds(),
            "mean_by_week": self.mean_by_week(),
            "windows": [asdict(r) for r in self.results],
        }


def checkpoints_for(max_rounds: int, *also: int) -> list[int]:
    """Round counts to score: every 50 rounds (a tenth of `max_rounds` when fewer) up to it, and `also`."""
    step = max(1, min(50, max_rounds // 10))
    return sorted({*range(step, max_rounds + 1, step), max_rounds, *also})


def _split(raw: RawData, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data before `window` and the window's rows."""
    before = raw.train[raw.train["Date"] < window.start]
    rows = raw.train[(raw.train["Date"] >= window.start) & (raw.train["Date"] <= window.end)]
    if rows.empty or before.empty:
        raise ValueError(f"window {window.label}: no data in it or before it")
    return before, rows


def _sales(log_sales: np.ndarray, req: Requests) -> np.ndarray:
    return np.where(req.open == 1, np.clip(np.expm1(log_sales), 0, None), 0.0)


def backtest_window(
    raw: RawData, window: Window, config: TrainConfig, checkpoints: list[int], progress: bool = False
) -> WindowResult:
    """Fit on the data before `window` with `max(checkpoints)` rounds; score the window at each checkpoint."""
    started = time.perf_counter()
    before, rows = _split(raw, window)
    wide = replace(config, rounds=max(max(checkpoints), config.rounds))
    fitted = fit(before, raw.store, wide, progress, window.label, serve_until=window.end).forecaster
    req = Requests.from_frame(rows)
    x = feature_matrix(fitted.tables, req)
    truth = rows["Sales"].to_numpy(dtype="float64")

    def sales(n_rounds: int) -> np.ndarray:
        return _sales(fitted.booster.inplace_predict(x, iteration_range=(0, n_rounds)), req)

    by_rounds = {r: rmspe(truth, sales(r)) for r in checkpoints}
    pred = sales(config.rounds)
    week = ((rows["Date"] - window.start).dt.days // 7).to_numpy()
    by_week = [rmspe(truth[week == k], pred[week == k]) for k in range(int(week.max()) + 1)]
    result = WindowResult(
        window=window.label,
        name=window.name,
        train_end=str(before["Date"].max().date()),
        open_days=int((truth > 0).sum()),
        rmspe=rmspe(truth, pred),
        by_rounds=by_rounds,
        by_week=by_week,
        seconds=time.perf_counter() - started,
    )
    log.info("backtest %s (%s): RMSPE %.4f in %.0fs", window.label, window.name, result.rmspe, result.seconds)
    return result


def run_backtests(
    raw: RawData,
    config: TrainConfig,
    windows: list[Window] | None = None,
    checkpoints: list[int] | None = None,
    progress: bool = False,
    jobs: int = 1,
) -> BacktestReport:
    """Score `config` on each window with a model fitted only on the data before it.

    `jobs` > 1 fits windows in parallel processes, one xgboost thread each: on a machine shared
    with other work, several single-threaded processes get more done than one process whose
    threads wait for each other.
    """
    windows = default_windows(raw, config.validation_days) if windows is None else windows
    if not windows:
        raise ValueError(
            f"data {raw.first_date.date()}..{raw.last_date.date()} is too short for any backtest window "
            "(each needs 270 days of data before it, and the last 42 days are left out)"
        )
    checkpoints = sorted({*(checkpoints or checkpoints_for(config.rounds)), config.rounds})
    if jobs > 1:
        single = replace(config, nthread=1)
        # Spawned, not forked: a fork copies locks other threads hold (logging, OpenMP, a server
        # in the same process) and the child can wait on them forever.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(backtest_window, raw, w, single, checkpoints, False) for w in windows]
            results = [f.result() for f in futures]
    else:
        results = [backtest_window(raw, w, config, checkpoints, progress) for w in windows]
    return BacktestReport(config, f"{raw.source} (fingerprint {fingerprint(raw)})", results)


@dataclass(frozen=True)
class SeedResult:
    """One window fitted once per seed: how much the score moves with the seed, and what averaging gains."""

    window: str
    name: str
    by_seed: dict[int, float]  # RMSPE of each seed's model
    averaged: float  # RMSPE of the seeds' mean log1p(Sales): a bagged model

    @property
    def spread(self) -> float:
        return float(np.std(list(self.by_seed.values())))


def _window_log_sales(raw: RawData, window: Window, config: TrainConfig) -> np.ndarray:
    before, rows = _split(raw, window)
    fitted = fit(before, raw.store, config, label=window.label, serve_until=window.end).forecaster
    return fitted.log_sales(Requests.from_frame(rows))


def seed_study(
    raw: RawData, config: TrainConfig, seeds: list[int], windows: list[Window] | None = None, jobs: int = 1
) -> list[SeedResult]:
    """Fit each window once per seed (xgboost's row and column sampling) at `config.rounds`.

    Tells the seed noise in a backtest figure apart from a real difference between settings, and
    scores the seeds' average, which costs one fit per seed in training and serving.
    """
    windows = default_windows(raw, config.validation_days) if windows is None else windows
    if not windows or len(set(seeds)) < 2:
        raise ValueError("a seed study needs at least one backtest window and two different seeds")
    tasks = [(w, replace(config, seed=s, nthread=1 if jobs > 1 else config.nthread)) for w in windows for s in seeds]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            logs = list(pool.map(_window_log_sales, [raw] * len(tasks), *zip(*tasks, strict=True)))
    else:
        logs = [_window_log_sales(raw, w, c) for w, c in tasks]
    results = []
    for i, w in enumerate(windows):
        _, rows = _split(raw, w)
        req = Requests.from_frame(rows)
        truth = rows["Sales"].to_numpy(dtype="float64")
        mine = logs[i * len(seeds) : (i + 1) * len(seeds)]
        results.append(
            SeedResult(
                window=w.label,
                name=w.name,
                by_seed={s: rmspe(truth, _sales(lg, req)) for s, lg in zip(seeds, mine, strict=True)},
                averaged=rmspe(truth, _sales(np.mean(mine, axis=0), req)),
            )
        )
        log.info("seeds %s on %s: %s, averaged %.4f", seeds, w.label, results[-1].by_seed, results[-1].averaged)
    return results
