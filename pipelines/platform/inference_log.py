"""The inference-log receiver on the host (`python -m serving.inference_log`), as the cluster runs it.

KServe's payload logger posts CloudEvents to it; locally the stand-in's router posts the same events,
so both paths store the same Parquet in the data bucket (serving/inference_log, docs/monitoring.md).
Its spool lives under the state folder, so events acknowledged before a `sluice down` or a crash are
uploaded at the next start.
"""

from __future__ import annotations

import os
import sys

from pipelines.config import Settings
from pipelines.platform.processes import Echo, http_get, start_service

SERVICE = "inference-log"
START_TIMEOUT = 30.0


def healthy(settings: Settings) -> bool:
    got = http_get(f"{settings.inference_log_url}healthz")
    return got is not None and got[0] == 200


def start(settings: Settings, echo: Echo = print) -> int | None:
    def launch() -> tuple[list[str], dict[str, str]]:
        cmd = [
            sys.executable, "-m", "serving.inference_log",
            "--host", settings.inference_log_host,
            "--port", str(settings.inference_log_port),
            "--spool-dir", str(settings.state_dir / "inference-log-spool"),
        ]  # fmt: skip
        # Parquet every 10 s on a laptop (the receiver's default is a minute): the log is looked at
        # right after the traffic, by `make demo` and people trying `sluice drift`.
        env = {
            "SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "10",
            **os.environ,
            **settings.aws_env(),
            "SLUICE_DATA_BUCKET": settings.data_bucket,
        }
        return cmd, env

    return start_service(
        settings,
        SERVICE,
        label="the inference-log receiver",
        url=settings.inference_log_url,
        address=(settings.inference_log_host, settings.inference_log_port),
        port_env="SLUICE_INFERENCE_LOG_PORT",
        healthy=lambda: healthy(settings),
        launch=launch,
        timeout=START_TIMEOUT,
        echo=echo,
    )
