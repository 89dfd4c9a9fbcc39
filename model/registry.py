"""Log a trained forecaster to MLflow and register it, with the tags promotions rely on.

Explicit, named steps on MlflowClient: start a run, log params/metrics/tags, log the pyfunc,
register the version, tag the version, optionally set an alias.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from model import reference
from model.pyfunc import log_pyfunc
from model.selection import SELECTION
from model.training import TrainedModel

log = logging.getLogger(__name__)

EXPERIMENT = "rossmann-forecaster"
# The holdout model (fitted before the holdout window) is logged with each run: the gate scores it.
HOLDOUT_ARTIFACTS = "holdout"
HOLDOUT_TAG = "model.holdout"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    download_uri: str  # where the artifacts live: s3://... with the embedded platform
    model_uri: str  # models:/name/version

    @classmethod
    def from_model_version(cls, client: MlflowClient, mv: ModelVersion) -> RegisteredVersion:
        return cls(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or "",
            download_uri=client.get_model_version_download_uri(mv.name, mv.version),
            model_uri=f"models:/{mv.name}/{mv.version}",
        )


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The commit that trained the model, with `-dirty` when the tree had uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def version_tags(trained: TrainedModel) -> dict[str, str]:
    tags = {
        "metrics.rmspe": f"{trained.metrics['rmspe']:.5f}",
        "metrics.rmse": f"{trained.metrics['rmse']:.1f}",
        "metrics.baseline_rmspe": f"{trained.metrics['baseline_rmspe']:.5f}",
        "data.source": trained.data_source,
        "data.fingerprint": trained.data_fingerprint,
        "git.commit": git_commit(),
        "train.rounds": str(trained.config.rounds),
        # Settings chosen by which backtests ("none": set by hand, e.g. the quick preset).
        "selection.id": trained.config.selected_by or "none",
        HOLDOUT_TAG: HOLDOUT_ARTIFACTS,
    }
    if trained.config.selected_by and trained.config.selected_by == SELECTION.id:
        tags |= SELECTION.tags()
    tags |= {f"data.{k}": v for k, v in trained.windows.items()}
    if trained.reference is not None:
        tags[reference.REFERENCE_TAG] = reference.ARTIFACT_PATH
    return tags


def resolve_version(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    """`ref` is a version number or an alias; the error says which ones exist."""
    from mlflow.exceptions import MlflowException

    ref = str(ref)
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        try:
            aliases = sorted(client.get_registered_model(name).aliases)
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            known = f"versions {versions}, aliases {aliases}"
        except MlflowException:
            known = f"no registered model named {name!r}"
        raise LookupError(f"cannot resolve {name!r} {ref!r} in the registry ({known})") from exc


IMPORTANCE_PLOT = "importance.png"


def _log_importance(trained: TrainedModel) -> None:
    """A global importance plot (total gain per feature) next to the model: what the per-prediction
    contributions add up to across the data, for people reading the run in MLflow's UI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = trained.forecaster.booster.get_score(importance_type="total_gain")
    names = sorted(gain, key=gain.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    ax.barh(names, [gain[n] for n in names], color="#3b7dd8")
    ax.set_xlabel("total gain (log1p sales)")
    ax.set_title("Feature importance")
    fig.tight_layout()
    mlflow.log_figure(fig, IMPORTANCE_PLOT)
    plt.close(fig)


def log_and_register(
    trained: TrainedModel,
    model_name: str,
    register: bool = True,
    alias: str | None = None,
    experiment: str = EXPERIMENT,
) -> RegisteredVersion | None:
    """Log run + baseline child run + holdout model + reference sample + pyfunc; register a new
    version of `model_name` and tag it."""
    mlflow.set_experiment(experiment)
    client = MlflowClient()
    tags = version_tags(trained)
    with mlflow.start_run(run_name=f"xgboost-{trained.windows['valid_end']}") as run:
        mlflow.log_params(trained.params())
        mlflow.log_metrics(trained.metrics)
        mlflow.log_dict({"counts": trained.counts, "windows": trained.windows}, "training_summary.json")
        mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith("metrics.")})
        with mlflow.start_run(run_name="sklearn-baseline", nested=True):
            mlflow.log_params(trained.baseline_params)
            mlflow.log_metrics({"rmspe": trained.metrics["baseline_rmspe"], "rmse": trained.metrics["baseline_rmse"]})
        with tempfile.TemporaryDirectory() as tmp:
            trained.holdout.save(Path(tmp))
            mlflow.log_artifacts(tmp, HOLDOUT_ARTIFACTS)
        if trained.reference is not None:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(reference.save(trained.reference, Path(tmp))), reference.ARTIFACT_DIR)
        _log_importance(trained)
        log.info("logging the pyfunc model to run %s", run.info.run_id)
        info = log_pyfunc(trained, registered_model_name=model_name if register else None)
    if not register:
        return None
    mv = client.get_model_version(model_name, str(info.registered_model_version))
    for key, value in tags.items():
        client.set_model_version_tag(model_name, mv.version, key, value)
    client.update_model_version(
        model_name,
        mv.version,
        description=(
            f"xgboost refit on {trained.data_source} ({trained.config.rounds} rounds, settings: "
            f"{trained.config.selected_by or 'not backtested'}); holdout {trained.windows['valid_start']}.."
            f"{trained.windows['valid_end']}, fitted before it: RMSPE {trained.metrics['rmspe']:.4f} "
            f"(sklearn baseline {trained.metrics['baseline_rmspe']:.4f})"
        ),
    )
    if alias:
        client.set_registered_model_alias(model_name, alias, mv.version)
    return RegisteredVersion.from_model_version(client, mv)
