"""What every `sluice ci` step shares: the registry and S3 clients from the settings, the gate, the
models a step walks over, and how outcomes are printed (GitHub Actions annotations for failures)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.commit import Outcome
from pipelines.gitops.state import WorkingTree, models
from pipelines.promotion.checks import GateRunner, evaluation_gate
from pipelines.registry import Registry, connect, s3_client


def export_client_env(settings: Settings) -> None:
    """The env MLflow, boto3 and kserve_storage read, for libraries that do not take Settings."""
    for key, value in settings.aws_env().items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    # CI logs and hook output are read by people: no progress bars redrawn a hundred times.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def connect_registry(settings: Settings) -> Registry:
    export_client_env(settings)
    return connect(settings.tracking_uri)


def s3_for(settings: Settings) -> Any:
    return s3_client(settings)


def gate_for(settings: Settings) -> GateRunner:
    return evaluation_gate(settings)


def model_names(repo: Path, only: str | None) -> list[str]:
    names = models(WorkingTree(git.toplevel(repo)))
    if only is not None:
        return [only] if only in names else []
    return names


def report(outcomes: Iterable[tuple[str, Outcome]]) -> int:
    """Print each model's outcome; the worst exit code. On GitHub Actions (and act) a failure is also
    an `::error::` annotation and a hold without metrics a `::warning::`, so the run page says why."""
    worst = 0
    annotate = os.environ.get("GITHUB_ACTIONS") == "true"
    for model, out in outcomes:
        print(f"[{model}] {out.render()}", flush=True)
        if annotate and out.failed:
            print(f"::error title=sluice {model}::{out.message}", flush=True)
        elif annotate and out.action == "hold" and "no metrics" in out.message:
            print(f"::warning title=sluice {model}::{out.message}", flush=True)
        worst = max(worst, out.exit_code)
    return worst
