"""Benchmark full training on real Rossmann data: wall time, peak memory, holdout RMSPE.

    uv run python benchmarks/train.py --data-dir ../shared/data/rossmann [--preset full|quick]

Runs `model.training.train` in-process with no MLflow logging (that is I/O, measured separately by
the integration tests): the holdout fit (data before the last 42 days, scored on them), the
scikit-learn baseline on the same features, and the refit on all the data that gets registered.
Prints one table comparing xgboost with the baseline on the holdout. Targets: the whole of it under
3 minutes and 4 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time
from pathlib import Path

# As `sluice train` sets it (pipelines/train.py): OpenMP threads sleep when idle. Read when xgboost loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from model.data import load_raw
from model.training import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="directory with train.csv(.gz), store.csv(.gz)")
    parser.add_argument("--preset", choices=["full", "quick"], default="full")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    started = time.perf_counter()
    raw = load_raw(args.data_dir)
    loaded = time.perf_counter()
    config = TrainConfig.quick() if args.preset == "quick" else TrainConfig()
    trained = train(raw, config)
    done = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = trained.metrics
    print()
    print(f"data: {raw.source}, holdout {trained.windows['valid_start']}..{trained.windows['valid_end']}")
    print(f"{'':24}{'xgboost':>12}{'sklearn HGB':>14}{'ratio':>8}")
    print(f"{'RMSPE':24}{m['rmspe']:12.4f}{m['baseline_rmspe']:14.4f}{m['rmspe'] / m['baseline_rmspe']:8.2f}")
    print(f"{'RMSE':24}{m['rmse']:12.0f}{m['baseline_rmse']:14.0f}{m['rmse'] / m['baseline_rmse']:8.2f}")
    print(f"boosting rounds: {config.rounds} (settings: {config.selected_by or 'not backtested'})")
    print(
        f"load+validate: {loaded - started:.1f}s  train (features, 2 fits, baseline): {done - loaded:.1f}s  "
        f"xgboost holdout fit: {m['holdout_fit_seconds']:.1f}s  refit: {m['fit_seconds']:.1f}s  "
        f"total: {done - started:.1f}s"
    )
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
