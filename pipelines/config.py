"""Sluice configuration: every setting in one place, read from env vars with embedded-mode defaults.

The embedded default is a laptop: LocalStack S3 on 127.0.0.1:4566, an MLflow tracking server on
127.0.0.1:5000 with a SQLite backend, all state under `.sluice/` in the repository. Point the same
variables at real AWS or a shared tracking server and nothing else changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    s3_host: str
    s3_port: int
    s3_endpoint_override: bool
    mlflow_host: str
    mlflow_port: int
    tracking_uri: str
    models_bucket: str
    data_bucket: str
    aws_region: str
    aws_access_key_id: str
    aws_secret_access_key: str
    model_name: str
    data_dir: Path | None
    localstack_version: str
    s3_endpoint_explicit: str | None = None  # MLFLOW_S3_ENDPOINT_URL, e.g. in CI against a shared S3

    @property
    def s3_endpoint_url(self) -> str | None:
        """None means "the real AWS endpoint" (override off)."""
        if not self.s3_endpoint_override:
            return None
        return self.s3_endpoint_explicit or f"http://{self.s3_host}:{self.s3_port}"

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.models_bucket}/"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def aws_env(self) -> dict[str, str]:
        """Env vars that make boto3, MLflow and kserve_storage talk to our S3."""
        env = {
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_DEFAULT_REGION": self.aws_region,
            "AWS_REGION": self.aws_region,
        }
        if self.s3_endpoint_url:
            env |= {
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url,
                "AWS_ENDPOINT_URL": self.s3_endpoint_url,
                "AWS_ENDPOINT_URL_S3": self.s3_endpoint_url,
                "S3_ENDPOINT": self.s3_endpoint_url.split("://", 1)[-1],
                "S3_USE_HTTPS": "0",
                "S3_VERIFY_SSL": "0",
            }
        return env


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: the process environment)."""
    e = os.environ if env is None else env
    mlflow_host = e.get("SLUICE_MLFLOW_HOST", "127.0.0.1")
    mlflow_port = int(e.get("SLUICE_MLFLOW_PORT", "5000"))
    data_dir = e.get("ROSSMANN_DATA_DIR") or None
    return Settings(
        state_dir=Path(e.get("SLUICE_STATE_DIR", str(REPO_ROOT / ".sluice"))).resolve(),
        s3_host=e.get("SLUICE_S3_HOST", "127.0.0.1"),
        s3_port=int(e.get("SLUICE_S3_PORT", "4566")),
        s3_endpoint_override=_bool(e.get("SLUICE_S3_ENDPOINT_OVERRIDE", "1")),
        mlflow_host=mlflow_host,
        mlflow_port=mlflow_port,
        tracking_uri=e.get("MLFLOW_TRACKING_URI", f"http://{mlflow_host}:{mlflow_port}"),
        models_bucket=e.get("SLUICE_MODELS_BUCKET", "sluice-models"),
        data_bucket=e.get("SLUICE_DATA_BUCKET", "sluice-data"),
        aws_region=e.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=e.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=e.get("AWS_SECRET_ACCESS_KEY", "test"),
        model_name=e.get("SLUICE_MODEL_NAME", "rossmann"),
        data_dir=Path(data_dir).expanduser().resolve() if data_dir else None,
        localstack_version=e.get("SLUICE_LOCALSTACK_VERSION", "4.9.2"),
        s3_endpoint_explicit=e.get("MLFLOW_S3_ENDPOINT_URL") or None,
    )
