"""`sluice backtest`: rolling-origin backtests of the training settings (model/backtest.py).

Prints each window's RMSPE, the mean and spread, the error per week of horizon and by boosting
rounds; `--out` writes the full report as JSON, `--write-selection` records the chosen settings in
model/selection.json, which training then uses and cites on every version it registers.
`--seeds 42,7,1` fits each window once per seed instead: the seed noise in a figure, and what the
seeds' average (bagging) would score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import Settings

if TYPE_CHECKING:
    from model.backtest import SeedResult
    from model.data import RawData
    from model.training import TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["full", "quick"], default="full", help="settings to backtest")
    p.add_argument("--rounds", type=int, default=None, help="boosting rounds to score (default: the preset's)")
    p.add_argument(
        "--max-rounds",
        type=int,
        default=None,
        help="also score every 50 rounds up to this many, to choose the rounds (default: --rounds)",
    )
    p.add_argument(
        "--parallel-trees",
        type=int,
        default=None,
        metavar="N",
        help="trees per round, each on its own sample, averaged (xgboost num_parallel_tree; default: the preset's)",
    )
    p.add_argument("--jobs", type=int, default=1, help="windows fitted in parallel processes (default 1)")
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="S1,S2,...",
        help="fit each window once per xgboost seed at --rounds and report the spread and the seeds' "
        "average (bagging) instead of the rounds",
    )
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    p.add_argument(
        "--write-selection",
        type=Path,
        default=None,
        help="write the chosen settings (best mean rounds) as a selection file, e.g. model/selection.json",
    )


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers separated by commas, e.g. 42,7,1 (got {text!r})"
        ) from None
    if len(set(seeds)) < 2:
        raise argparse.ArgumentTypeError(f"give at least two different seeds, e.g. 42,7,1 (got {text!r})")
    return seeds


def render_seeds(results: list[SeedResult], config: TrainConfig) -> str:
    seeds = list(results[0].by_seed)
    lines = [f"settings: {config}", ""]
    lines.append(
        f"{'window':24} " + " ".join(f"{'seed ' + str(s):>9}" for s in seeds) + f" {'spread':>7} {'averaged':>9}"
    )
    for r in results:
        lines.append(
            f"{r.window:24} " + " ".join(f"{r.by_seed[s]:9.4f}" for s in seeds) + f" {r.spread:7.4f} {r.averaged:9.4f}"
        )
    means = [sum(r.by_seed[s] for r in results) / len(results) for s in seeds]
    averaged = sum(r.averaged for r in results) / len(results)
    lines.append(f"{'mean':24} " + " ".join(f"{m:9.4f}" for m in means) + f" {'':7} {averaged:9.4f}")
    lines.append("")
    lines.append(
        f"the seeds' average scores {averaged:.4f} against {sum(means) / len(means):.4f} for one seed (mean); "
        f"it costs {len(seeds)}x the boosting in training and in every prediction"
    )
    return "\n".join(lines)


def render(report) -> str:  # type: ignore[no-untyped-def]
    lines = [f"data: {report.data}", f"settings: {report.config}", ""]
    weeks = len(report.mean_by_week())
    head = f"{'window':24} {'name':40} {'open days':>9} {'RMSPE':>7}  " + " ".join(
        f"wk{k + 1:<4}" for k in range(weeks)
    )
    lines.append(head)
    for r in report.results:
        by_week = " ".join(f"{v:.4f}" for v in r.by_week[:weeks])
        lines.append(f"{r.window:24} {r.name:40} {r.open_days:9,} {r.rmspe:7.4f}  {by_week}")
    mean_weeks = " ".join(f"{v:.4f}" for v in report.mean_by_week())
    lines.append(f"{'mean (std)':24} {'':40} {'':9} {report.rmspe_mean:7.4f}  {mean_weeks}")
    lines.append(f"{'':24} {'':40} {'':9} ({report.rmspe_std:.4f})")
    by_rounds = report.mean_by_rounds()
    if len(by_rounds) > 1:
        lines.append("")
        lines.append("mean RMSPE by rounds: " + ", ".join(f"{r}: {v:.4f}" for r, v in by_rounds.items()))
        lines.append(f"best mean at {report.best_rounds()} rounds")
    return "\n".join(lines)


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.train import configure

    configure(settings)  # logging, and OpenMP threads that sleep when idle (before xgboost loads)
    from model.backtest import checkpoints_for, run_backtests
    from model.data import fingerprint
    from model.errors import DataValidationError
    from model.selection import selection_id
    from model.training import TrainConfig
    from pipelines.train import load_data

    config = TrainConfig.quick() if args.preset == "quick" else TrainConfig()
    if args.rounds:
        config = replace(config, rounds=args.rounds)
    if args.parallel_trees is not None:
        if args.parallel_trees < 1:
            print(f"error: --parallel-trees must be 1 or more (got {args.parallel_trees})", file=sys.stderr)
            return 2
        config = replace(config, num_parallel_tree=args.parallel_trees)
    if args.seeds and (args.write_selection or args.max_rounds):
        print("error: --seeds scores one round count; leave out --write-selection and --max-rounds", file=sys.stderr)
        return 2
    try:
        raw = load_data(args, settings)
    except (DataValidationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seeds:
        return _seed_study(args, raw, config)
    checkpoints = checkpoints_for(max(args.max_rounds or 0, config.rounds), config.rounds)
    try:
        report = run_backtests(raw, config, checkpoints=checkpoints, progress=True, jobs=args.jobs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.out:
        args.out.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    if args.write_selection:
        # Committed with the code: name the data by kind and fingerprint, never by a local path.
        where = "--data-dir $ROSSMANN_DATA_DIR" if raw.source.startswith("dir:") else "(generated data)"
        command = (
            f"sluice backtest --preset {args.preset} --parallel-trees {config.num_parallel_tree} "
            f"--rounds {config.rounds} --max-rounds {max(checkpoints)} --jobs {args.jobs} {where}"
        )
        chosen = report.selection("", command)
        chosen = replace(
            chosen,
            id=selection_id(str(date.today()), fingerprint(raw), chosen.config, chosen.per_window),
            data=f"{raw.source.split(':', 1)[0]}, {raw.first_date.date()}..{raw.last_date.date()}, "
            f"fingerprint {fingerprint(raw)}",
        )
        args.write_selection.write_text(chosen.to_json())
        print(f"wrote {args.write_selection}: {chosen.config['rounds']} rounds, mean RMSPE {chosen.rmspe_mean:.4f}")
    return 0


def _seed_study(args: argparse.Namespace, raw: RawData, config: TrainConfig) -> int:
    from dataclasses import asdict

    from model.backtest import seed_study

    try:
        results = seed_study(raw, config, args.seeds, jobs=args.jobs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_seeds(results, config))
    if args.out:
        doc = {"config": asdict(config), "seeds": args.seeds, "windows": [asdict(r) for r in results]}
        args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0
