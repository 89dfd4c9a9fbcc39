"""Sluice configuration: every setting in one place, read from env vars with embedded-mode defaults.

The embedded default is a laptop: LocalStack S3 on 127.0.0.1:4566, an MLflow tracking server on
127.0.0.1:5000 with a SQLite backend, Prometheus on 127.0.0.1:9090, the GitOps repository as a bare
git remote at `.sluice/gitops.git` with a CI runner (act) behind its hooks, and the local stand-in
for ArgoCD + KServe serving what that remote declares on 127.0.0.1:8080; all state under `.sluice/`.
Point the same variables at real AWS, a shared tracking server, a GitHub remote or a cluster's
Prometheus and nothing else changes.
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
    gitops_remote: str = ""  # SLUICE_GITOPS_REMOTE; default <state_dir>/gitops.git (served by `sluice up`)
    gitops_branch: str = "main"
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9090
    prometheus_url: str = ""  # PROMETHEUS_URL; default the embedded one
    prometheus_bin: str = ""  # SLUICE_PROMETHEUS_BIN; default `prometheus` on PATH
    scrape_interval: float = 5.0
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080  # the stand-in's ingress (V2 REST for every model it serves)
    # SLUICE_SERVE_URL: where a client reaches a model's V2 endpoint, `{model}` standing for its
    # name; in a cluster each InferenceService has its own host, e.g.
    # http://{model}.sluice-serving.svc.cluster.local. Default: the stand-in's ingress.
    serve_url_template: str = ""
    ci_tick: float = 15.0  # how often the runner runs the rollout workflow while a canary is in progress
    ci_sync_tick: float = 60.0  # how often it runs the sync workflow for release files that name an alias
    ci_bot_names: tuple[str, ...] = ("sluice-ci", "github-actions[bot]")
    poll_interval: float = 2.0  # how often the stand-in looks at the remote (ArgoCD: every 3 minutes)
    standin: bool = True  # SLUICE_STANDIN=0: a real cluster serves (kind e2e); CI reads it through KUBECONFIG
    inference_log_host: str = "127.0.0.1"
    inference_log_port: int = 8095  # the payload logger's receiver (serving/inference_log)
    pushgateway_url: str = ""  # SLUICE_PUSHGATEWAY_URL; default the embedded one, when it is up
    pushgateway_host: str = "127.0.0.1"
    pushgateway_port: int = 9091
    console_host: str = "127.0.0.1"
    console_port: int = 8097  # the read-only web console (pipelines/console)

    @property
    def s3_endpoint_url(self) -> str | None:
        """MLFLOW_S3_ENDPOINT_URL when set; else the embedded LocalStack; None means "the real AWS
        endpoint" (SLUICE_S3_ENDPOINT_OVERRIDE=0, as the workflows set it: CI talks to the S3 its
        secrets name, or to AWS)."""
        if self.s3_endpoint_explicit:
            return self.s3_endpoint_explicit
        if not self.s3_endpoint_override:
            return None
        return f"http://{self.s3_host}:{self.s3_port}"

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.models_bucket}/"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def gitops_remote_path(self) -> Path | None:
        """The bare repository `sluice up` serves, or None when the remote is elsewhere (e.g. GitHub)."""
        if not self.gitops_remote:
            return self.state_dir / "gitops.git"
        local = Path(self.gitops_remote.removeprefix("file://"))
        return local if local.is_absolute() and not self.gitops_remote.startswith(("http", "git@", "ssh:")) else None

    @property
    def gitops_url(self) -> str:
        return self.gitops_remote or str(self.state_dir / "gitops.git")

    @property
    def embedded_prometheus_url(self) -> str:
        return f"http://{self.prometheus_host}:{self.prometheus_port}"

    @property
    def embedded_pushgateway_url(self) -> str:
        return f"http://{self.pushgateway_host}:{self.pushgateway_port}"

    @property
    def metrics_url(self) -> str:
        return self.prometheus_url or self.embedded_prometheus_url

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    def serve_url_for(self, model: str) -> str:
        """The base URL of `model`'s V2 endpoint (before /v2/models/...)."""
        if self.serve_url_template:
            return self.serve_url_template.replace("{model}", model).rstrip("/")
        return self.serve_url

    @property
    def inference_log_url(self) -> str:
        return f"http://{self.inference_log_host}:{self.inference_log_port}/"

    @property
    def console_url(self) -> str:
        return f"http://{self.console_host}:{self.console_port}/"

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
        gitops_remote=e.get("SLUICE_GITOPS_REMOTE", ""),
        gitops_branch=e.get("SLUICE_GITOPS_BRANCH", "main"),
        prometheus_host=e.get("SLUICE_PROMETHEUS_HOST", "127.0.0.1"),
        prometheus_port=int(e.get("SLUICE_PROMETHEUS_PORT", "9090")),
        prometheus_url=e.get("PROMETHEUS_URL", ""),
        prometheus_bin=e.get("SLUICE_PROMETHEUS_BIN", ""),
        scrape_interval=float(e.get("SLUICE_SCRAPE_INTERVAL", "5")),
        serve_host=e.get("SLUICE_SERVE_HOST", "127.0.0.1"),
        serve_port=int(e.get("SLUICE_SERVE_PORT", "8080")),
        serve_url_template=e.get("SLUICE_SERVE_URL", ""),
        ci_tick=float(e.get("SLUICE_CI_TICK", "15")),
        ci_sync_tick=float(e.get("SLUICE_CI_SYNC_TICK", "60")),
        ci_bot_names=tuple(
            n.strip() for n in e.get("SLUICE_CI_BOT_NAMES", "sluice-ci,github-actions[bot]").split(",") if n.strip()
        ),
        poll_interval=float(e.get("SLUICE_POLL_INTERVAL", "2")),
        standin=_bool(e.get("SLUICE_STANDIN", "1")),
        inference_log_host=e.get("SLUICE_INFERENCE_LOG_HOST", "127.0.0.1"),
        inference_log_port=int(e.get("SLUICE_INFERENCE_LOG_PORT", "8095")),
        pushgateway_url=e.get("SLUICE_PUSHGATEWAY_URL", ""),
        pushgateway_host=e.get("SLUICE_PUSHGATEWAY_HOST", "127.0.0.1"),
        pushgateway_port=int(e.get("SLUICE_PUSHGATEWAY_PORT", "9091")),
        console_host=e.get("SLUICE_CONSOLE_HOST", "127.0.0.1"),
        console_port=int(e.get("SLUICE_CONSOLE_PORT", "8097")),
    )
