"""`sluice train`, `sluice evaluate`, `sluice generate-data`: the model steps as make and CI call them."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from pipelines.config import Settings

log = logging.getLogger("sluice")

DEFAULT_SYNTHETIC = {"stores": 60, "days": 730, "seed": 7}


def configure(settings: Settings) -> None:
    """Logging, and the env MLflow and boto3 read (tracking URI, S3 endpoint and credentials)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "alembic", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for key, value in settings.aws_env().items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    # Read when xgboost loads OpenMP: idle threads sleep instead of spinning. With other work on the
    # cores, spinning made a 2-thread fit 4x slower than 1 thread (docs/benchmarks.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_data(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    """Real CSVs from --data-dir; else generated data when --stores/--days/--seed ask for it; else
    ROSSMANN_DATA_DIR's CSVs; else generated data. A flag on the command line wins over the environment."""
    from model.data import load_raw
    from model.synthetic import generate

    asks_generated = any(getattr(args, k, None) is not None for k in DEFAULT_SYNTHETIC)
    data_dir = args.data_dir or (None if asks_generated else settings.data_dir)
    if data_dir is not None:
        log.info("loading Kaggle-format data from %s", data_dir)
        return load_raw(Path(data_dir))
    params: dict[str, int] = {k: getattr(args, k, None) or v for k, v in DEFAULT_SYNTHETIC.items()}
    log.info(
        "generating synthetic data: %s stores x %s days (seed %s)",
        params["stores"],
        params["days"],
        params["seed"],
    )
    return generate(params["stores"], params["days"], params["seed"])


def rebuild_source(source: str):  # type: ignore[no-untyped-def]
    """The data a data.source tag names, or None when this machine cannot rebuild it (a `dir:` whose
    folder is not here, or no tag). Generated data is deterministic by its parameters, so
    `synthetic:` always rebuilds; no fallback to other data: callers decide whether one is right."""
    from model.data import load_raw
    from model.synthetic import generate

    if source.startswith("synthetic:"):
        params = dict(re.findall(r"(\w+)=([^,]+)", source))
        return generate(
            int(params["stores"]), int(params["days"]), int(params["seed"]), params.get("start", "2013-01-01")
        )
    if source.startswith("dir:") and Path(source[4:]).is_dir():
        return load_raw(Path(source[4:]))
    return None


def data_for_source(source: str, data_dir: Path | None, settings: Settings):  # type: ignore[no-untyped-def]
    """The data a version was trained on, rebuilt from its data.source tag, unless `data_dir` names other data.

    ROSSMANN_DATA_DIR is only the fallback for a `dir:` source whose folder has gone: a gate must
    score a model trained on generated stores on those stores, not on whatever the environment names.
    """
    from model.data import load_raw

    if data_dir:
        return load_raw(Path(data_dir))
    raw = rebuild_source(source)
    if raw is not None:
        return raw
    return load_data(argparse.Namespace(data_dir=None, stores=None, days=None, seed=None), settings)


def cmd_generate_data(args: argparse.Namespace, settings: Settings) -> int:
    from model.synthetic import write_csv

    train_path, store_path = write_csv(args.out, args.stores, args.days, args.seed)
    print(f"wrote {train_path} and {store_path}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    configure(settings)
    from dataclasses import replace

    from model.registry import log_and_register
    from model.training import TrainConfig, train

    config = TrainConfig.quick() if args.preset == "quick" else TrainConfig()
    if args.rounds:  # no longer what the backtests chose
        config = replace(config, rounds=args.rounds, selected_by="")
    from model.errors import DataValidationError

    try:
        raw = load_data(args, settings)
    except (DataValidationError, FileNotFoundError) as exc:
        print(
            f"error: {exc}\nnothing was trained or logged; fix the data (or omit --data-dir to use generated data)",
            file=sys.stderr,
        )
        return 2
    trained = train(raw, config)
    name = args.model or settings.model_name
    log.info("logging to MLflow at %s", os.environ["MLFLOW_TRACKING_URI"])
    registered = log_and_register(trained, name, register=not args.no_register, alias=args.alias)
    m = trained.metrics
    print(
        f"\nholdout RMSPE {m['rmspe']:.4f} (sklearn baseline {m['baseline_rmspe']:.4f}) on "
        f"{trained.windows['valid_start']}..{trained.windows['valid_end']}, fitted before it; "
        f"registered: the refit on all the data; {m['train_seconds']:.0f}s"
    )
    if registered:
        print(f"registered {registered.name} version {registered.version}")
        print(f"  artifacts: {registered.download_uri}")
        if os.environ["MLFLOW_TRACKING_URI"].startswith("http"):
            print(f"  MLflow UI: {os.environ['MLFLOW_TRACKING_URI']}/#/models/{name}/versions/{registered.version}")
        print(f"next: sluice evaluate --candidate {registered.version} --baseline champion")
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    configure(settings)
    from mlflow import MlflowClient

    from model.evaluation import evaluate
    from model.registry import resolve_version

    name = args.model or settings.model_name
    client = MlflowClient()
    try:
        cand = resolve_version(client, name, args.candidate)
    except LookupError as exc:
        print(f"error: {exc}")
        return 2
    raw = data_for_source(cand.tags.get("data.source", ""), args.data_dir, settings)
    verdict = evaluate(client, name, cand.version, args.baseline, raw, tolerance=args.tolerance)
    print(f"{'PASS' if verdict.passed else 'FAIL'}: {name} v{verdict.candidate}: {verdict.reason}")
    print(f"recorded on version {verdict.candidate} as gate.* tags")
    return 0 if verdict.passed else 1
