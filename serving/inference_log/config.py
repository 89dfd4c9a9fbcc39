"""The receiver's settings, read from env vars with defaults (it runs without `pipelines/`).

S3 is boto3's own configuration: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 (or
AWS_ENDPOINT_URL) for LocalStack or another S3, AWS_DEFAULT_REGION. The bucket variable is the one
the rest of Sluice reads (SLUICE_DATA_BUCKET), so one env serves both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "SLUICE_INFERENCE_LOG_"
DEFAULT_PORT = 8090
# Hive's name for a partition whose value is empty or null; pyarrow and query engines read it so.
EMPTY_PARTITION = "__HIVE_DEFAULT_PARTITION__"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the env var."""


@dataclass(frozen=True)
class LogConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Write-ahead log, Parquet outbox and commit records. Relative paths are taken from the working
    # directory (`sluice up` runs services in its state dir).
    spool_dir: Path = Path("inference-log-spool")
    bucket: str = "sluice-data"
    prefix: str = "inference-log/"
    flush_rows: int = 50_000  # a flush starts when this many completed rows wait in memory...
    flush_interval: float = 60.0  # ...or this many seconds after the previous one
    pair_timeout: float = 30.0  # a half without its partner is stored alone after this
    dedup_window: float = 600.0  # how long a stored ce-id is remembered (also across a restart)
    dedup_max: int = 500_000  # and at most this many of them
    max_pending: int = 100_000  # halves waiting for their partner; the oldest are stored alone past this
    max_spool_bytes: int = 2 * 1024**3  # past this, new events get 503 (nothing acknowledged is dropped)
    max_body_bytes: int = 8 * 1024**2
    fsync: bool = False  # True: fsync the write-ahead log before every acknowledgement
    sync_interval: float = 1.0  # otherwise: fsync at most this long after an append
    drain_timeout: float = 20.0  # on SIGTERM: how long to keep trying to upload the spool
    upload_retry_max: float = 30.0  # longest wait between upload attempts while S3 fails

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ConfigError("SLUICE_DATA_BUCKET: empty; expected a bucket name")
        if self.prefix and not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")


def _read(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected {parse.__name__}") from None
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{name}={raw!r}: must not be negative")
    return value


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(value)


_bool.__name__ = "a boolean (1/0, true/false)"


def load_config(env: Mapping[str, str] | None = None, **overrides: Any) -> LogConfig:
    """Settings from `env` (default: the process environment); `overrides` win (command-line flags)."""
    e = os.environ if env is None else env
    d = LogConfig.__dataclass_fields__

    def get(field: str, parse: Callable[[str], Any]) -> Any:
        return _read(e, ENV_PREFIX + field.upper(), parse, d[field].default)

    values: dict[str, Any] = {
        "host": get("host", str),
        "port": get("port", int),
        "spool_dir": get("spool_dir", Path),
        "bucket": _read(e, "SLUICE_DATA_BUCKET", str, d["bucket"].default),
        "prefix": get("prefix", str),
        "flush_rows": get("flush_rows", int),
        "flush_interval": get("flush_interval", float),
        "pair_timeout": get("pair_timeout", float),
        "dedup_window": get("dedup_window", float),
        "dedup_max": get("dedup_max", int),
        "max_pending": get("max_pending", int),
        "max_spool_bytes": get("max_spool_bytes", int),
        "max_body_bytes": get("max_body_bytes", int),
        "fsync": get("fsync", _bool),
        "sync_interval": get("sync_interval", float),
        "drain_timeout": get("drain_timeout", float),
        "upload_retry_max": get("upload_retry_max", float),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LogConfig(**values)


def s3_client_from_env(env: Mapping[str, str] | None = None) -> Any:
    """boto3's S3 client as its env configures it; path-style addressing when an endpoint is set
    (LocalStack and most S3-compatible stores), short timeouts so an outage is noticed quickly."""
    import boto3
    from botocore.config import Config

    e = os.environ if env is None else env
    custom_endpoint = bool(e.get("AWS_ENDPOINT_URL_S3") or e.get("AWS_ENDPOINT_URL"))
    region = e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client(
        "s3",
        region_name=region,
        config=Config(
            s3={"addressing_style": "path" if custom_endpoint else "auto"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=2,
            read_timeout=20,
        ),
    )
