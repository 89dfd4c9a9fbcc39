"""Benchmark full training on real Rossmann data: wall time, peak memory, validation RMSPE.

    uv run python benchmarks/train.py --data-dir ../shared/data/rossmann [--preset full|quick]

Runs in-process with no MLflow logging (that is I/O, measured separately by the integration
tests), and prints one table comparing xgboost with the scikit-learn baseline fitted in the same run.
Targets: under 3 minutes, under 4 GB peak, RMSPE <= 0.10 on the last 42 days of the shared data.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

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
    print(f"data: {raw.source}, validation {trained.windows['valid_start']}..{trained.windows['valid_end']}")
    print(f"{'':24}{'xgboost':>12}{'sklearn HGB':>14}{'ratio':>8}")
    print(f"{'RMSPE':24}{m['rmspe']:12.4f}{m['baseline_rmspe']:14.4f}{m['rmspe'] / m['baseline_rmspe']:8.2f}")
    print(f"{'RMSE':24}{m['rmse']:12.0f}{m['baseline_rmse']:14.0f}{m['rmse'] / m['baseline_rmse']:8.2f}")
    print(f"boosting rounds (best): {m['best_iteration'] + 1:.0f} of {config.rounds}")
    print(
        f"load+validate: {loaded - started:.1f}s  train (features, xgboost, baseline): {done - loaded:.1f}s  "
        f"xgboost fit: {m['fit_seconds']:.1f}s  total: {done - started:.1f}s"
    )
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
