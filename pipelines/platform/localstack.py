"""LocalStack S3 on the host, in a virtualenv of its own (its pins clash with mlflow and kserve).

LocalStack community keeps S3 in memory only: `PERSISTENCE=1` is a Pro feature and has no effect in
4.9.2 (checked: buckets and objects are gone after a restart); see s3_snapshot.py for how the
embedded platform keeps objects across `sluice down`/`up` anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pipelines.config import Settings
from pipelines.platform.processes import Echo, http_get, start_service
from pipelines.platform.toolvenv import ensure_tool_venv

# localstack-core's metadata lacks these upper bounds; without them 4.9.2 fails to start on 3.11:
# cbor2/pyopenssl/cryptography break its imports, localstack-twisted>=26 imports service_identity
# without depending on it, and psutil>=7.2 dropped a name its DNS module imports.
LOCALSTACK_EXTRA_PINS = ("cbor2<5.7", "pyopenssl<24.3", "cryptography<44", "service-identity", "psutil<7.2")

LOCALSTACK_START_TIMEOUT = 120.0


def localstack_venv(settings: Settings) -> Path:
    return settings.state_dir / "localstack-venv"


def localstack_url(settings: Settings) -> str:
    return f"http://{settings.s3_host}:{settings.s3_port}"


def manages_localstack(settings: Settings) -> bool:
    """False when S3 is real AWS (SLUICE_S3_ENDPOINT_OVERRIDE=0) or another endpoint
    (MLFLOW_S3_ENDPOINT_URL elsewhere, e.g. a shared S3 in CI): then there is nothing to start."""
    endpoint = settings.s3_endpoint_url
    return endpoint is not None and endpoint.rstrip("/") == localstack_url(settings)


def localstack_requirements(settings: Settings) -> list[str]:
    return [f"localstack-core[runtime]=={settings.localstack_version}", *LOCALSTACK_EXTRA_PINS]


def ensure_localstack_venv(settings: Settings, echo: Echo = print) -> Path:
    """Create or update LocalStack's own virtualenv; returns its python. No-op when up to date."""
    return ensure_tool_venv(
        localstack_venv(settings),
        localstack_requirements(settings),
        label=f"localstack {settings.localstack_version}",
        echo=echo,
    )


def localstack_env(settings: Settings) -> dict[str, str]:
    root = settings.state_dir / "localstack"
    return {
        **os.environ,
        "GATEWAY_LISTEN": f"{settings.s3_host}:{settings.s3_port}",
        # The default twisted server ignores the host in GATEWAY_LISTEN and binds 0.0.0.0 (4.9.2);
        # hypercorn binds the configured interface, so S3 stays on loopback unless asked otherwise.
        "GATEWAY_SERVER": "hypercorn",
        "SERVICES": "s3",
        "LOCALSTACK_VOLUME_DIR": str(root),
        # The machines have /.dockerenv, which makes LocalStack assume a container and write to
        # /var/lib/localstack; force host mode so every file lands under FILESYSTEM_ROOT.
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(root),
        # No DNS server on :53, no telemetry (it shells out to `docker ps`), no certificate download:
        # none is reachable or needed here, and each leaves an error in the log.
        "DNS_ADDRESS": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        # plux (LocalStack's plugin loader) caches entry points per environment in ~/.cache.
        "XDG_CACHE_HOME": str(root / "cache"),
        # Pro-only in 4.9.2 (nothing is saved), kept so a Pro image or later release would persist.
        "PERSISTENCE": "1",
    }


def localstack_healthy(settings: Settings) -> bool:
    got = http_get(f"{localstack_url(settings)}/_localstack/health")
    if got is None or got[0] != 200:
        return False
    try:
        state = json.loads(got[1]).get("services", {}).get("s3")
    except (ValueError, AttributeError):
        return False
    return state in ("running", "available")


def start_localstack(settings: Settings, echo: Echo = print) -> int | None:
    """Start LocalStack S3 unless it already answers; returns its pid (None: not started by us)."""

    def launch() -> tuple[list[str], Mapping[str, str]]:
        python = ensure_localstack_venv(settings, echo)
        return [str(python), "-m", "localstack.runtime.main"], localstack_env(settings)

    return start_service(
        settings,
        "localstack",
        label="LocalStack",
        url=localstack_url(settings),
        address=(settings.s3_host, settings.s3_port),
        port_env="SLUICE_S3_PORT",
        healthy=lambda: localstack_healthy(settings),
        launch=launch,
        timeout=LOCALSTACK_START_TIMEOUT,
        echo=echo,
    )
