"""Where the numpy tree walk (model.small_batch) beats xgboost's inplace_predict: time per call by rows.

    OMP_NUM_THREADS=1 uv run python benchmarks/tree_walk.py [--booster PATH] [--rounds 3]

For boosters of the quick preset's shape (80 trees of depth 6), 350 trees of depth 6 and the
registered shape (350 trees of depth 10), each trained on the same random regression data (30
features, as many as the model's), plus `--booster` (e.g. a saved model's `artifacts/booster.ubj`,
timed on rows drawn like the training data), it times both paths at 1, 4, 16, 64 and 128 rows per call.
In every round the two paths alternate which goes first; the table shows the median (min-max) over
the rounds of each round's median per call, the inplace/walk ratio, and checks that both give the
same floats. The cut-off in model.small_batch (`MAX_ROWS`) is read off this table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.predict import median_call_seconds
from model.small_batch import TreeWalk

ROWS = (1, 4, 16, 64, 128)
SHAPES = ((80, 6), (350, 6), (350, 10))  # (trees, depth)


def boosters(path: str | None) -> dict[str, xgb.Booster]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 30)).astype(np.float32)
    y = x[:, 0] * 2 + np.sin(3 * x[:, 1]) + x[:, 2] * x[:, 3] + rng.normal(size=len(x))
    data = xgb.DMatrix(x, y)
    found = {}
    for trees, depth in SHAPES:
        params = {"max_depth": depth, "eta": 0.1, "nthread": 1, "tree_method": "hist"}
        found[f"{trees} trees, depth {depth}"] = xgb.train(params, data, trees)
    if path:
        booster = xgb.Booster()
        booster.load_model(path)
        booster.set_param({"nthread": 1})
        found[path] = booster
    return found


def alternate(
    walk: TreeWalk, booster: xgb.Booster, matrix: np.ndarray, rounds: int, calls: int
) -> dict[str, list[float]]:
    """Per-round medians of both paths, the first alternating between rounds."""
    cases: dict[str, Callable[[], object]] = {
        "walk": lambda: walk.predict(matrix),
        "inplace": lambda: booster.inplace_predict(matrix),
    }
    times: dict[str, list[float]] = {"walk": [], "inplace": []}
    for r in range(rounds):
        for case in ("walk", "inplace") if r % 2 == 0 else ("inplace", "walk"):
            times[case].append(median_call_seconds(cases[case], calls) * 1e6)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--booster", help="also time this saved booster (e.g. <model>/artifacts/booster.ubj)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=300, help="calls per case and round")
    args = p.parse_args()
    rng = np.random.default_rng(1)
    print(f"{'booster':<34}{'rows':>5}{'walk us':>22}{'inplace us':>24}{'inplace/walk':>14}")
    for name, booster in boosters(args.booster).items():
        walk = TreeWalk.of(booster)
        assert walk is not None, name
        for rows in ROWS:
            matrix = rng.normal(size=(rows, booster.num_features())).astype(np.float32)
            assert np.array_equal(walk.predict(matrix), booster.inplace_predict(matrix)), (name, rows)
            times = alternate(walk, booster, matrix, args.rounds, args.calls)
            w, i = (statistics.median(times[c]) for c in ("walk", "inplace"))
            spread = {c: f"({min(times[c]):.0f}-{max(times[c]):.0f})" for c in times}
            label = f"{name} ({walk.nodes:,} nodes)" if rows == 1 else ""
            walk_col, inplace_col = f"{w:>10.0f} {spread['walk']:<11}", f"{i:>10.0f} {spread['inplace']:<13}"
            print(f"{label:<34}{rows:>5}{walk_col}{inplace_col}{i / w:>10.2f}x")


if __name__ == "__main__":
    main()
