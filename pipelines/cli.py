"""`sluice`: the command line that make targets, CI and people call.

Every subcommand lazy-imports its implementation so that `sluice --help` stays instant.
Handlers take the parsed args and the Settings and return a process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import load_settings

EPILOG = """\
The embedded default runs everything on this machine: LocalStack S3 on 127.0.0.1:4566 and an MLflow
tracking server on 127.0.0.1:5000 (SQLite backend, artifacts in s3://sluice-models/). Settings are
env vars (SLUICE_*, MLFLOW_TRACKING_URI, ROSSMANN_DATA_DIR, AWS_*); see pipelines/config.py.
Typical flow:  sluice up  ->  sluice train  ->  sluice evaluate  ->  sluice serve
"""


def _handler(module: str, func: str):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        mod = importlib.import_module(module)
        return int(getattr(mod, func)(args, load_settings()) or 0)

    return run


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory with Kaggle-format train.csv and store.csv (plain or .gz); "
        "default: $ROSSMANN_DATA_DIR, else generated synthetic data",
    )
    p.add_argument("--stores", type=int, default=None, help="synthetic data: number of stores (default 60)")
    p.add_argument("--days", type=int, default=None, help="synthetic data: number of days (default 730)")
    p.add_argument("--seed", type=int, default=None, help="synthetic data: random seed (default 7)")


def _add_model_ref(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", default=None, help="registered model name (default $SLUICE_MODEL_NAME or rossmann)")
    g = p.add_mutually_exclusive_group(required=required)
    default = "" if required else " (default: what gitops/models/<model>/release.yaml names)"
    g.add_argument("--version", help="registered model version number" + default)
    g.add_argument("--alias", help="registered model alias, e.g. champion" + default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: GitOps-managed model serving on KServe.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, module: str, func: str, description: str | None = None):  # type: ignore[no-untyped-def]
        p = sub.add_parser(
            name,
            help=help_,
            description=description or help_,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(run=_handler(module, func))
        return p

    # --- local platform -------------------------------------------------------------------------
    add(
        "up",
        "start the local platform: LocalStack S3, terraform/storage, MLflow tracking server",
        "pipelines.platform",
        "cmd_up",
        description="Start LocalStack (own virtualenv under .sluice/), apply terraform/storage against it, "
        "start the MLflow tracking server (SQLite backend, --no-serve-artifacts, artifact root in S3), "
        "and wait until both answer their health checks. Safe to run twice.",
    )
    add("down", "stop MLflow and LocalStack started by `sluice up`", "pipelines.platform", "cmd_down")
    add(
        "status",
        "show the local platform's health and check every registered version's artifacts",
        "pipelines.platform",
        "cmd_status",
        description="Health of LocalStack and MLflow, the buckets, and for every registered model version "
        "whether its s3:// artifacts still exist (LocalStack community keeps no objects across a restart).",
    )

    # --- model ----------------------------------------------------------------------------------
    p = add(
        "generate-data",
        "write synthetic Rossmann-format train.csv and store.csv to a directory",
        "pipelines.train",
        "cmd_generate_data",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--stores", type=int, default=60)
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--seed", type=int, default=7)

    p = add(
        "train",
        "train the Rossmann forecaster, log it to MLflow and register a version",
        "pipelines.train",
        "cmd_train",
        description="Load (or generate) data, validate it, build features, fit xgboost and a scikit-learn "
        "baseline with time-based validation on the last 42 days, log both to MLflow and register the "
        "xgboost pyfunc as a new version of the model.",
    )
    _add_data_args(p)
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    p.add_argument("--rounds", type=int, default=None, help="max boosting rounds (default: preset)")
    p.add_argument(
        "--preset",
        choices=["full", "quick"],
        default="full",
        help="full: the accuracy configuration; quick: few rounds, for demos and tests",
    )
    p.add_argument("--alias", default=None, help="also set this alias on the new version")
    p.add_argument("--no-register", action="store_true", help="log the run but do not register a version")

    p = add("backtest", "rolling-origin backtests of the training settings", "pipelines.backtest", "cmd_backtest")
    _add_data_args(p)
    importlib.import_module("pipelines.backtest").add_arguments(p)

    p = add(
        "evaluate",
        "compare a candidate version against a baseline on the same window and record the verdict",
        "pipelines.train",
        "cmd_evaluate",
        description="Score both versions on the candidate's validation window and tag the candidate with "
        "the verdict (gate.verdict = pass|fail). This is the gate `sluice promote` uses.",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--candidate", required=True, help="candidate version number")
    p.add_argument("--baseline", required=True, help="baseline alias (e.g. champion) or version number")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="pass if candidate RMSPE <= baseline RMSPE * (1 + tolerance) (default 0.02)",
    )
    _add_data_args(p)

    # --- serving --------------------------------------------------------------------------------
    p = add(
        "serve",
        "serve a registered model (or what gitops/ declares) over KServe V2 REST and gRPC",
        "serving.cli",
        "cmd_serve",
    )
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--version")
    src.add_argument("--alias")
    src.add_argument("--model-uri", help="s3://... or local directory with an MLflow model")
    src.add_argument("--model-dir", type=Path, help="already-downloaded MLflow model directory")
    src.add_argument("--gitops", type=Path, help="serve what this git repository's gitops/ declares at HEAD")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-rows", type=int, default=10_000, help="reject requests with more rows (default 10000)")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="with --gitops: how often to check HEAD for new commits (default 3)",
    )

    # --- gitops ---------------------------------------------------------------------------------
    p = add(
        "promote",
        "resolve a model version in MLflow, gate it, render its InferenceService and commit",
        "pipelines.promote",
        "cmd_promote",
    )
    _add_model_ref(p, required=False)
    p.add_argument("--repo", type=Path, default=Path("."), help="git repository holding gitops/ (default .)")
    p.add_argument("--push", action="store_true", help="push the commit to the remote")
    p.add_argument("--force", action="store_true", help="skip the evaluation gate (needs --reason)")
    p.add_argument("--reason", default=None, help="why the gate is overridden (recorded in the commit)")

    p = add("rollout", "advance, hold, finalize or roll back a canary", "pipelines.rollout", "cmd_rollout")
    p.add_argument("action", choices=["step", "status"])
    p.add_argument("--model", default=None)
    p.add_argument("--repo", type=Path, default=Path("."))
    p.add_argument("--metrics-url", default=None, help="runtime /metrics URL (laptop) or Prometheus base URL")
    p.add_argument("--push", action="store_true")

    p = add(
        "sync",
        "open a promotion when an MLflow alias moved away from what Git serves",
        "pipelines.promote",
        "cmd_sync",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--alias", default="champion")
    p.add_argument("--repo", type=Path, default=Path("."))
    p.add_argument("--push", action="store_true")

    p = add("history", "release history of a model, read from git log", "pipelines.promote", "cmd_history")
    p.add_argument("--model", default=None)
    p.add_argument("--repo", type=Path, default=Path("."))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
