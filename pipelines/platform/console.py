"""The web console on the host (`python -m pipelines.console`), started by `sluice up`.

It only reads (Git, MLflow, Prometheus, the V2 endpoint), so it starts last and stops first; it binds
to `console_host` (127.0.0.1 by default) like every other listener of the embedded platform.
"""

from __future__ import annotations

import os
import sys

from pipelines.config import Settings
from pipelines.platform import gitserver
from pipelines.platform.processes import Echo, http_get, start_service

SERVICE = "console"
START_TIMEOUT = 30.0


def healthy(settings: Settings) -> bool:
    got = http_get(f"{settings.console_url}healthz")
    return got is not None and got[0] == 200


def start(settings: Settings, echo: Echo = print) -> int | None:
    def launch() -> tuple[list[str], dict[str, str]]:
        cmd = [
            sys.executable, "-m", "pipelines.console",
            "--host", settings.console_host,
            "--port", str(settings.console_port),
        ]  # fmt: skip
        return cmd, {**os.environ, **gitserver.settings_env(settings)}

    return start_service(
        settings,
        SERVICE,
        label="the sluice console",
        url=settings.console_url,
        address=(settings.console_host, settings.console_port),
        port_env="SLUICE_CONSOLE_PORT",
        healthy=lambda: healthy(settings),
        launch=launch,
        timeout=START_TIMEOUT,
        echo=echo,
    )
