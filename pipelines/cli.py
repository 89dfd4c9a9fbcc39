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
The embedded default runs everything on this machine (`sluice up`): LocalStack S3 :4566, MLflow :5000,
Prometheus :9090, the GitOps repository as a git remote at .sluice/gitops.git with a CI runner that
executes .github/workflows with act, and a local stand-in for ArgoCD + KServe serving what Git declares
on :8080. Settings are env vars (SLUICE_*, MLFLOW_TRACKING_URI, PROMETHEUS_URL, ROSSMANN_DATA_DIR, AWS_*);
see pipelines/config.py.
Typical flow:  sluice up  ->  sluice train  ->  git clone .sluice/gitops.git; edit release.yaml; git push
               ->  sluice ci log -f  ->  sluice status  ->  sluice history
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
        "start the embedded platform: S3, MLflow, Prometheus, the GitOps remote, CI runner and cluster stand-in",
        "pipelines.platform.up",
        "cmd_up",
        description="Start LocalStack S3 (own virtualenv under .sluice/) and apply terraform/storage to it, keep its "
        "objects mirrored on disk, start MLflow (SQLite, artifacts in S3), Prometheus, create the GitOps remote "
        ".sluice/gitops.git (first start: seeded with this project) with its hooks, start the CI runner (act) "
        "and the local cluster stand-in. Safe to run twice; each part whose setting points elsewhere is skipped.",
    )
    add(
        "down",
        "stop everything `sluice up` started (state under .sluice/ is kept)",
        "pipelines.platform.up",
        "cmd_down",
    )
    add(
        "status",
        "the platform's health, what serves per model, the last CI jobs, and every version's artifacts",
        "pipelines.platform.up",
        "cmd_status",
        description="Services, what Git says serves (and whether the release file, manifest, status record and "
        "aliases agree), the CI runner's last jobs, the buckets and every registered version's s3:// artifacts. "
        "Exits 1 when something needs attention, saying what to do.",
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

    p = add(
        "forecast",
        "batch forecasts from a registered version: every store's next N days, or Kaggle's test.csv",
        "pipelines.forecast",
        "cmd_forecast",
        description=importlib.import_module("pipelines.forecast").__doc__,
    )
    importlib.import_module("pipelines.forecast").add_arguments(p)

    p = add("backtest", "rolling-origin backtests of the training settings", "pipelines.backtest", "cmd_backtest")
    _add_data_args(p)
    importlib.import_module("pipelines.backtest").add_arguments(p)

    p = add(
        "evaluate",
        "compare a candidate version against a baseline on the same window and record the verdict",
        "pipelines.train",
        "cmd_evaluate",
        description="Score both versions on the candidate's validation window and tag the candidate with "
        "the verdict (gate.verdict = pass|fail). This is the gate a release must pass.",
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
        "serve one registered model version over KServe V2 REST and gRPC (the runtime image's server)",
        "pipelines.serve",
        "cmd_serve",
        description="Serve one version with the same runtime the image runs. What Git declares (canary "
        "included) is served by `sluice up`'s cluster stand-in on :8080; this command is for one version alone.",
    )
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--version")
    src.add_argument("--alias")
    src.add_argument("--model-uri", help="s3://... or local directory with an MLflow model")
    src.add_argument("--model-dir", type=Path, help="already-downloaded MLflow model directory")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-rows", type=int, default=10_000, help="reject requests with more rows (default 10000)")

    # --- CI: one command per workflow step -----------------------------------------------------------
    ci = sub.add_parser(
        "ci",
        help="the CI steps the workflows run (check, promote, rollout, sync) and the local CI runner",
        description="Each workflow step that does Sluice work is one of these commands; the local runner runs "
        "the same workflows with act. Every step works on a checkout of the GitOps repository (--repo).",
    )
    ci_sub = ci.add_subparsers(dest="ci_command", metavar="STEP", required=True)

    def ci_step(name: str, help_: str, module: str, func: str, description: str) -> argparse.ArgumentParser:
        p = ci_sub.add_parser(name, help=help_, description=description)
        p.set_defaults(run=_handler(module, func))
        p.add_argument("--repo", type=Path, default=Path("."), help="checkout of the GitOps repository (default .)")
        return p

    p = ci_step(
        "check",
        "the required check: release files parse and name versions that can serve and pass the gate",
        "pipelines.ci.check",
        "cmd_check",
        "Check the change BASE..REV (the pre-receive hook and the check workflow run this): nobody but CI edits "
        "inferenceservice.yaml or status.yaml; every changed release file parses strictly; what it names exists, "
        "is READY, has s3:// artifacts and a signature, and passes the evaluation gate (unless the commit carries "
        "`Sluice-Force: <reason>`). Without --rev: the working tree, every model.",
    )
    p.add_argument("--rev", default=None, help="commit to check (default: the working tree)")
    p.add_argument("--base", default=None, help="what REV is compared with (default: check every model)")
    p = ci_step(
        "promote",
        "render what each release file asks for: a first release, a canary, or nothing",
        "pipelines.ci.promote",
        "cmd_promote",
        "Resolve each release file's version or alias, check it, and commit the rendered InferenceService and "
        "the status record: straight to 100% when nothing serves, else a canary at the first rollout step. "
        "An edit during a rollout waits for it to end; naming the stable version again rolls the canary back.",
    )
    p.add_argument("--model", default=None, help="only this model (default: every release file)")
    p.add_argument("--push", action="store_true", help="push each commit (rebasing onto a moved remote)")
    p = ci_step(
        "rollout",
        "one canary step per model in rollout: hold, advance, finalize or roll back on measured metrics",
        "pipelines.ci.rollout",
        "cmd_rollout",
        "Read each model's status record, the cluster's view of its InferenceService (SLUICE_KUBE_API or a "
        "kubeconfig, when set) and the canary's metrics from Prometheus (PROMETHEUS_URL), decide, commit. "
        "Nothing in rollout: nothing to do (exit 0). A canary without a metrics source holds, saying so.",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--prometheus-url", default=None, help="Prometheus base URL (default $PROMETHEUS_URL)")
    p.add_argument("--push", action="store_true")
    p = ci_step(
        "sync",
        "promote through Git when an alias a release file names has moved in MLflow",
        "pipelines.ci.promote",
        "cmd_sync",
        "For release files that name an alias (e.g. `alias: champion`): when it now names another version, "
        "render it like a push would (never a version tagged sluice.rolled_back).",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--push", action="store_true")
    p = ci_step(
        "retrain",
        "train on the newest data; release the new version through Git when it beats the champion",
        "pipelines.ci.retrain",
        "cmd_retrain",
        "Train and register a version, run the evaluation gate against the champion, and when it passes name "
        "the version in the release file and promote it (a canary, gated like any release). A version that "
        "fails the gate stays registered with gate.* tags saying why and is not released.",
    )
    _add_data_args(p)
    p.add_argument("--model", default=None)
    p.add_argument("--preset", choices=["full", "quick"], default="full")
    p.add_argument("--branch", default=None, help="commit to this branch for review instead of the default branch")
    p.add_argument("--push", action="store_true")

    p = ci_sub.add_parser(
        "run",
        help="dispatch a workflow on the local CI runner",
        description="Queue a workflow_dispatch of .github/workflows/WORKFLOW.yml for the local runner.",
    )
    p.set_defaults(run=_handler("pipelines.platform.ci_commands", "cmd_run"))
    p.add_argument("workflow", help="workflow file name without .yml, e.g. promote, rollout, sync, ci")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="workflow input (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the job's log until it ends; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=1800.0)
    p = ci_sub.add_parser(
        "log",
        help="show a CI job's log (default: the newest)",
        description="Print a job's log from .sluice/logs/ci/; with -f, follow it until the job ends.",
    )
    p.set_defaults(run=_handler("pipelines.platform.ci_commands", "cmd_log"))
    p.add_argument("job", nargs="?", default=None, help="job id (see `sluice ci jobs`)")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--timeout", type=float, default=1800.0)
    p = ci_sub.add_parser("jobs", help="the local CI runner's queued, running and recent jobs")
    p.set_defaults(run=_handler("pipelines.platform.ci_commands", "cmd_jobs"))
    p.add_argument("--limit", type=int, default=20)

    # --- monitoring -----------------------------------------------------------------------------
    p = add(
        "drift",
        "compare a version's logged traffic with its reference sample: evidently report, summary, verdict",
        "pipelines.monitoring.commands",
        "cmd_drift",
        description="Read the version's traffic from the inference log (S3), resample its reference sample (logged "
        "at training) to the window's DayOfWeek x Promo x holiday-week mix, build an evidently report (drift per "
        "input column, prediction drift) as HTML and JSON under --out, log both to the version's MLflow run, push "
        "the figures to the Pushgateway when one is set. Exit 1 with --fail-on-drift when drift is found; 2 when "
        "there is nothing to compare (no traffic, no reference sample). See docs/monitoring.md.",
    )
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    p.add_argument("--version", default=None, help="version number or alias (default champion)")
    p.add_argument(
        "--since", default=None, help="start of the traffic window, ISO date/time, UTC (default: 7 days before --until)"
    )
    p.add_argument("--until", default=None, help="end of the window, exclusive (default now)")
    p.add_argument("--out", type=Path, default=None, help="folder for the reports (default <state dir>/reports)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is found")
    p.add_argument(
        "--prediction-threshold", type=float, default=0.25, help="normed Wasserstein distance (default 0.25)"
    )
    p.add_argument(
        "--unmatched-threshold",
        type=float,
        default=0.05,
        help="share of open rows in DayOfWeek x Promo cells the reference lacks (default 0.05)",
    )
    p.add_argument(
        "--pushgateway",
        default=None,
        help="Pushgateway URL (default $SLUICE_PUSHGATEWAY_URL, else the embedded one when it is up)",
    )

    p = add(
        "feedback",
        "join actual sales to logged predictions: realized RMSPE per version and per day",
        "pipelines.monitoring.commands",
        "cmd_feedback",
        description="Read actuals (CSV with Store, Date, Sales; a path or s3://bucket/key), join them by Store and "
        "Date to the predictions logged in the window (the latest per version and store-day), compute RMSPE on "
        "store-days with Sales > 0 per version and per day (and on the store-days every version predicted), "
        "print a table, log it to each version's MLflow run and push it to the Pushgateway when one is set.",
    )
    p.add_argument("--actuals", required=True, help="CSV with Store, Date, Sales (local path or s3://bucket/key)")
    p.add_argument("--model", default=None, help="registered model name (default rossmann)")
    p.add_argument("--since", default=None, help="predictions logged from (ISO date/time, UTC; default 35 days ago)")
    p.add_argument("--until", default=None, help="predictions logged before (default now)")
    p.add_argument("--out", type=Path, default=None, help="folder for the per-day tables (default <state dir>/reports)")
    p.add_argument(
        "--pushgateway",
        default=None,
        help="Pushgateway URL (default $SLUICE_PUSHGATEWAY_URL, else the embedded one when it is up)",
    )

    p = add(
        "history",
        "release history of a model, read from the GitOps repository's commits",
        "pipelines.gitops.history",
        "cmd_history",
    )
    p.add_argument("--model", default=None)
    p.add_argument(
        "--repo", type=Path, default=None, help="a clone of the GitOps repository (default: the embedded remote)"
    )

    p = add(
        "console",
        "a read-only web console: releases from Git, the live rollout from Prometheus, forecasts via V2",
        "pipelines.console.server",
        "cmd_console",
    )
    p.add_argument("--host", default=None, help="address to bind (default SLUICE_CONSOLE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default SLUICE_CONSOLE_PORT, 8097)")
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
