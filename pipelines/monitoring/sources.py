"""Where monitoring reads and writes: the inference log in S3, the version's run in MLflow.

Every error a user can fix (no such version, no reference sample, nothing logged) is a
`MonitoringError` whose message says what to do next; commands print it and exit 2.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import Settings


class MonitoringError(RuntimeError):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True)
class Version:
    model: str
    version: str
    run_id: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def __str__(self) -> str:
        return f"{self.since.isoformat(timespec='seconds')} .. {self.until.isoformat(timespec='seconds')}"


def parse_time(value: str | None, field: str) -> datetime | None:
    """ISO date or datetime (naive = UTC), or None."""
    if not value:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise MonitoringError(
            f"{field}: {value!r} is not an ISO date or time (e.g. 2015-07-31 or 2015-07-31T12:00)"
        ) from exc
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def window(since: str | None, until: str | None, default_days: int = 7, now: datetime | None = None) -> Window:
    """[since, until) in UTC; until defaults to now, since to `default_days` before until."""
    end = parse_time(until, "--until") or (now or datetime.now(UTC))
    start = parse_time(since, "--since") or end - timedelta(days=default_days)
    if start >= end:
        raise MonitoringError(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})")
    return Window(start, end)


def mlflow_client(settings: Settings) -> Any:
    """MlflowClient against the settings' tracking server, with the S3 env its artifacts need."""
    from pipelines.train import configure

    configure(settings)
    from mlflow import MlflowClient

    return MlflowClient()


def resolve(client: Any, model: str, ref: str) -> Version:
    from model.registry import resolve_version

    try:
        mv = resolve_version(client, model, ref)
    except LookupError as exc:
        raise MonitoringError(f"{exc}; name one with --version") from exc
    except Exception as exc:  # MLflow unreachable or refusing: say which server
        raise MonitoringError(
            f"cannot ask MLflow at {client.tracking_uri} for {model} {ref} ({type(exc).__name__}: {exc}); "
            f"is it up (`sluice status`)?"
        ) from exc
    return Version(model=model, version=str(mv.version), run_id=str(mv.run_id or ""), tags=dict(mv.tags))


def load_reference(client: Any, version: Version) -> pd.DataFrame:
    """The version's reference sample (model/reference.py), or a MonitoringError saying what to do."""
    from model import reference

    path = version.tags.get(reference.REFERENCE_TAG)
    if not path:
        raise MonitoringError(
            f"{version.model} v{version.version} has no reference sample (it was trained before versions carried "
            f"one): train a new version (`sluice train` or `sluice ci retrain`) and check that one, or pass "
            f"--version with a newer version"
        )
    with tempfile.TemporaryDirectory(prefix="sluice-reference-") as folder:
        try:
            local = client.download_artifacts(version.run_id, path, folder)
        except Exception as exc:  # MLflow or S3: either way the artifact cannot be had
            raise MonitoringError(
                f"{version.model} v{version.version}: cannot download its reference sample {path} from run "
                f"{version.run_id} ({type(exc).__name__}: {exc}); check S3 and MLflow (`sluice status`)"
            ) from exc
        return reference.load(Path(local))


def read_traffic(settings: Settings, model: str, version: str | None, span: Window) -> pd.DataFrame:
    """Logged rows of `model` (one version or all) received in the window."""
    from pipelines.registry import s3_client
    from serving.inference_log.reader import read_log

    try:
        return read_log(s3_client(settings), settings.data_bucket, model, version, span.since, span.until)
    except Exception as exc:  # botocore: endpoint down, bucket missing, credentials
        raise MonitoringError(
            f"cannot read the inference log from s3://{settings.data_bucket}/ ({type(exc).__name__}: {exc}); "
            f"is S3 up (`sluice status`)?"
        ) from exc


def log_to_run(
    client: Any,
    run_id: str,
    files: Iterable[Path],
    artifact_dir: str,
    metrics: Mapping[str, float],
    timestamp: datetime | None = None,
) -> None:
    """Attach files and metrics to the version's training run (metrics keep their history there)."""
    from mlflow.entities import Metric

    ms = int((timestamp or datetime.now(UTC)).timestamp() * 1000)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_dir)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), ms, 0) for k, v in metrics.items()])


def read_actuals(settings: Settings, path: str) -> pd.DataFrame:
    """A CSV (plain or .gz) from a local path or s3://bucket/key, every column as text."""
    import io

    try:
        if path.startswith("s3://"):
            from pipelines.registry import s3_client

            bucket, _, key = path.removeprefix("s3://").partition("/")
            body = s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
            compression = "gzip" if key.endswith(".gz") else None
            return pd.read_csv(io.BytesIO(body), dtype=str, compression=compression)
        return pd.read_csv(path, dtype=str)
    except FileNotFoundError as exc:
        raise MonitoringError(f"--actuals: no file {path}") from exc
    except Exception as exc:  # botocore (no such key, S3 down) or a file that is not CSV
        raise MonitoringError(f"--actuals: cannot read {path} ({type(exc).__name__}: {exc})") from exc
