"""The Pushgateway on the host (Debian's `prometheus-pushgateway`): where batch jobs leave figures.

`sluice drift` and `sluice feedback` run and exit; they push their figures here and the embedded
Prometheus scrapes them (honor_labels), so the drift and accuracy alerts and the dashboard see them
as they would in a cluster. Not installed: `sluice up` says so and the commands push nowhere.
"""

from __future__ import annotations

import os
import shutil

from pipelines.config import Settings
from pipelines.platform.processes import Echo, http_get, start_service

SERVICE = "pushgateway"
START_TIMEOUT = 30.0
BINARIES = ("prometheus-pushgateway", "pushgateway")


def binary() -> str | None:
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def healthy(settings: Settings) -> bool:
    got = http_get(f"{settings.embedded_pushgateway_url}/-/ready")
    return got is not None and got[0] == 200


def target(settings: Settings) -> str | None:
    """Where to push: SLUICE_PUSHGATEWAY_URL, else the embedded gateway when it is up, else nowhere."""
    if settings.pushgateway_url:
        return settings.pushgateway_url
    return settings.embedded_pushgateway_url if healthy(settings) else None


def start(settings: Settings, echo: Echo = print) -> int | None:
    gateway = binary()
    if gateway is None:
        echo(
            "pushgateway: not installed (apt-get install prometheus-pushgateway): drift and feedback figures "
            "reach no Prometheus"
        )
        return None

    def launch() -> tuple[list[str], dict[str, str]]:
        # Debian's binary persists to /var/lib/prometheus/pushgateway.data unless told otherwise: every
        # gateway on the machine would then share (and restore) each other's figures. Ours keeps its own,
        # in the state folder, so a restart of the platform keeps the last drift and feedback figures.
        folder = settings.state_dir / "pushgateway"
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            gateway,
            f"--web.listen-address={settings.pushgateway_host}:{settings.pushgateway_port}",
            f"--persistence.file={folder / 'pushgateway.data'}",
        ]
        return cmd, dict(os.environ)

    return start_service(
        settings,
        SERVICE,
        label="the Pushgateway",
        url=settings.embedded_pushgateway_url,
        address=(settings.pushgateway_host, settings.pushgateway_port),
        port_env="SLUICE_PUSHGATEWAY_PORT",
        healthy=lambda: healthy(settings),
        launch=launch,
        timeout=START_TIMEOUT,
        echo=echo,
    )
