"""Benchmark the model-level predict path: this tree's pyfunc against another checkout's, side by side.

    OMP_NUM_THREADS=1 uv run python benchmarks/predict.py --baseline-repo /tmp/sluice-main [--preset full]

`--baseline-repo` is a checkout of the code to compare with (e.g. `git archive <commit> | tar -x -C
/tmp/sluice-main`); it runs in this tree's virtualenv. Each side runs in its own worker process
(both trees define the package `model`): the worker trains a model on the same data (`--preset
quick`: the quick preset on 60 generated stores x 400 days, the model benchmarks/serving.py serves;
`full`: depth 10 and `--rounds` rounds on `--stores` real stores from `--data-dir`, else generated
ones), saves and loads it as an MLflow pyfunc, checks that its predictions are finite, and times
`predict` on 1 row and on 1,000 rows, through MLflow (`PyFuncModel.predict`) and on the unwrapped
python model. Workers alternate (new, old, old, new, ...) for `--rounds-of-measurement` rounds; the
table shows medians, spread (min-max of the per-round medians) and old/new ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CASES = ("pyfunc_1", "inner_1", "pyfunc_1000", "inner_1000")


def median_call_seconds(fn: Any, calls: int) -> float:
    """Median seconds per call over `calls` calls, after a warm-up."""
    for _ in range(min(50, calls)):
        fn()
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def worker(args: argparse.Namespace) -> None:
    """Runs inside the tree under test (its `model` package first on sys.path)."""
    from dataclasses import replace

    import mlflow
    import numpy as np
    import psutil

    from model.data import RawData, load_raw
    from model.synthetic import generate
    from model.training import TrainConfig, train

    if args.preset == "quick":
        raw = generate(stores=60, days=400, seed=7)
        config = TrainConfig.quick()
    elif args.data_dir:
        raw = load_raw(Path(args.data_dir))
        keep = raw.train["Store"] <= args.stores
        raw = RawData(raw.train[keep].reset_index(drop=True), raw.store[raw.store["Store"] <= args.stores], raw.source)
        config = TrainConfig(rounds=args.rounds, learning_rate=0.1, max_depth=10)
    else:
        raw = generate(stores=args.stores, days=730, seed=7)
        config = TrainConfig(rounds=args.rounds, learning_rate=0.1, max_depth=10)
    # The same fields exist in both trees; early stopping off (patience = rounds) where it exists.
    config = replace(config, early_stopping_rounds=config.rounds)
    path = Path(args.model_dir)
    if not path.exists():  # trained once per side, reloaded in later rounds
        from model.pyfunc import save_pyfunc

        save_pyfunc(train(raw, config, progress=False), path)
    loaded = mlflow.pyfunc.load_model(str(path))
    inner = loaded.unwrap_python_model()
    cols = ["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]
    rows = raw.train[cols].tail(1000).assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d")).reset_index(drop=True)
    rows["StateHoliday"] = rows["StateHoliday"].astype(str)
    one = rows.iloc[[len(rows) - 1]]
    pred = np.asarray(loaded.predict(rows))
    assert pred.shape == (1000,) and np.isfinite(pred).all()
    # A row alone gets the same float as in a batch (model.small_batch's path for few rows).
    alone = [float(np.asarray(loaded.predict(rows.iloc[[i]]))[0]) for i in range(0, 1000, 20)]
    assert alone == pred[::20].tolist(), "one row alone and in a batch disagree"
    rss_mb = psutil.Process().memory_info().rss / 2**20
    result = {
        "pyfunc_1": median_call_seconds(lambda: loaded.predict(one), 2000),
        "inner_1": median_call_seconds(lambda: inner.predict(None, one), 2000),
        "pyfunc_1000": median_call_seconds(lambda: loaded.predict(rows), 200),
        "inner_1000": median_call_seconds(lambda: inner.predict(None, rows), 200),
        "rss_mb": rss_mb,
        "trees": len((inner.booster if hasattr(inner, "booster") else inner.forecaster.booster).get_dump()),
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(repo: Path, model_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model-dir", str(model_dir)]
    cmd += ["--preset", args.preset, "--stores", str(args.stores), "--rounds", str(args.rounds)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"worker in {repo} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-repo", type=Path, help="checkout of the code to compare with")
    parser.add_argument("--preset", choices=["quick", "full"], default="quick", help="the model to time")
    parser.add_argument("--data-dir", type=Path, default=None, help="full: Kaggle data (default: generated data)")
    parser.add_argument("--stores", type=int, default=100, help="full: stores to train on (default 100)")
    parser.add_argument("--rounds", type=int, default=700, help="full: boosting rounds, depth 10 (default 700)")
    parser.add_argument("--rounds-of-measurement", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sides = {"new": REPO} | ({"old": args.baseline_repo.resolve()} if args.baseline_repo else {})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds_of_measurement):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                res = run_worker(sides[name], Path(tmp) / name, args)
                results[name].append(res)
                print(f"round {i + 1} {name}: " + ", ".join(f"{k} {res[k] * 1e3:.3f} ms" for k in CASES), flush=True)
    print()
    threads = os.environ.get("OMP_NUM_THREADS", "(unset: 1 in workers)")
    trees, n = results["new"][0]["trees"], args.rounds_of_measurement
    print(f"OMP_NUM_THREADS={threads}, preset {args.preset}, {trees} trees; median (min-max) of {n} rounds, ms")
    header = f"{'case':14}" + "".join(f"{name:>24}" for name in sides) + ("      old/new" if "old" in sides else "")
    print(header)
    for case in CASES:
        cells, medians = "", {}
        for name in sides:
            values = [r[case] * 1e3 for r in results[name]]
            medians[name] = statistics.median(values)
            cells += f"{medians[name]:>10.3f} ({min(values):.3f}-{max(values):.3f})"
        ratio = f"{medians['old'] / medians['new']:>12.1f}x" if "old" in sides else ""
        print(f"{case:14}{cells}{ratio}")
    # The first round of each side trained the model in the same process: later rounds only loaded it.
    for name in sides:
        loaded_only = [r["rss_mb"] for r in results[name][1:]]
        if loaded_only:
            print(f"{name}: resident memory after loading the model {max(loaded_only):.0f} MB")


if __name__ == "__main__":
    main()
