"""The MLflow tracking server of the embedded platform: SQLite backend, artifacts in S3.

`--no-serve-artifacts` with an `s3://` artifact root: clients write to S3 themselves, so version
download URIs are `s3://` paths an InferenceService's storageUri can use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pipelines.config import Settings
from pipelines.platform.processes import Echo, http_get, start_service

MLFLOW_START_TIMEOUT = 180.0  # the first start creates and migrates the SQLite schema
# One worker: a SQLite backend serialises writes anyway, and each worker costs ~300 MB on 2 cores.
MLFLOW_WORKERS = "1"


def mlflow_url(settings: Settings) -> str:
    return f"http://{settings.mlflow_host}:{settings.mlflow_port}"


def manages_mlflow(settings: Settings) -> bool:
    """False when MLFLOW_TRACKING_URI points at a server other than the one we would start."""
    return settings.tracking_uri.rstrip("/") == mlflow_url(settings)


def mlflow_command(settings: Settings) -> list[str]:
    sibling = Path(sys.executable).with_name("mlflow")
    base = [str(sibling)] if sibling.exists() else [sys.executable, "-m", "mlflow"]
    db = settings.state_dir / "mlflow" / "mlflow.db"
    return [
        *base,
        "server",
        "--host",
        settings.mlflow_host,
        "--port",
        str(settings.mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{db}",
        # Clients write to S3 themselves, so version URIs are s3:// paths KServe can download.
        "--no-serve-artifacts",
        "--default-artifact-root",
        settings.artifact_root,
        "--workers",
        MLFLOW_WORKERS,
    ]


def mlflow_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **settings.aws_env(),
        # The job runner (GenAI scorers, prompt optimisation) forks 7 huey consumers: ~1 GB of memory
        # and ~30 s of startup that a tabular-model registry does not need.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def mlflow_healthy(settings: Settings) -> bool:
    got = http_get(f"{mlflow_url(settings)}/health")
    return got is not None and got[0] == 200


def start_mlflow(settings: Settings, echo: Echo = print) -> int | None:
    """Start the MLflow tracking server unless it already answers; returns its pid."""

    def launch() -> tuple[list[str], Mapping[str, str]]:
        (settings.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
        return mlflow_command(settings), mlflow_env(settings)

    return start_service(
        settings,
        "mlflow",
        label="MLflow",
        url=mlflow_url(settings),
        address=(settings.mlflow_host, settings.mlflow_port),
        port_env="SLUICE_MLFLOW_PORT",
        healthy=lambda: mlflow_healthy(settings),
        launch=launch,
        timeout=MLFLOW_START_TIMEOUT,
        echo=echo,
    )
