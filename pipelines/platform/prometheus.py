"""Prometheus on the host (Debian's `prometheus` package, or SLUICE_PROMETHEUS_BIN).

It scrapes every runtime pod the local stand-in starts (file_sd targets the stand-in writes under
`<state_dir>/prometheus/targets/`, each labelled with its Knative-style `revision` and `pod`), the
stand-in's router, and loads the alert rules of `gitops/platform/prometheusrule.yaml` (the same
groups a PrometheusRule carries in a cluster). The rollout gates query it (pipelines/rollout/metrics).
Where no binary can be had, `sluice up` says so: canaries then hold at their step, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import REPO_ROOT, Settings
from pipelines.platform.processes import Echo, http_get, start_service

START_TIMEOUT = 60.0
RULES_SOURCE = REPO_ROOT / "gitops" / "platform" / "prometheusrule.yaml"
RUNTIME_JOB = "sluice-runtime"


def home(settings: Settings) -> Path:
    return settings.state_dir / "prometheus"


def targets_dir(settings: Settings) -> Path:
    return home(settings) / "targets"


def binary(settings: Settings) -> str | None:
    if settings.prometheus_bin:
        return settings.prometheus_bin if Path(settings.prometheus_bin).is_file() else None
    return shutil.which("prometheus")


def manages_prometheus(settings: Settings) -> bool:
    """False when PROMETHEUS_URL points at another Prometheus (e.g. a cluster's, port-forwarded)."""
    return settings.metrics_url.rstrip("/") == settings.embedded_prometheus_url


def healthy(settings: Settings) -> bool:
    got = http_get(f"{settings.embedded_prometheus_url}/-/ready")
    return got is not None and got[0] == 200


def rule_groups(source: Path = RULES_SOURCE) -> list[dict[str, Any]]:
    """The `spec.groups` of the PrometheusRule manifest: a Prometheus rules file's `groups`."""
    if not source.is_file():
        return []
    doc = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    return list((doc.get("spec") or {}).get("groups") or [])


def write_config(settings: Settings) -> Path:
    base = home(settings)
    targets_dir(settings).mkdir(parents=True, exist_ok=True)
    rules = base / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    interval = f"{settings.scrape_interval:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": RUNTIME_JOB,
                # The runtime's own model/version labels win; the target adds revision and pod.
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(targets_dir(settings) / "*.json")], "refresh_interval": "5s"}],
            },
            {
                # Figures `sluice drift` and `sluice feedback` push: their job/model/version labels win.
                "job_name": "sluice-pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [f"{settings.pushgateway_host}:{settings.pushgateway_port}"]}],
            },
            {
                "job_name": "sluice-router",
                "honor_labels": True,
                "static_configs": [{"targets": [f"{settings.serve_host}:{settings.serve_port}"]}],
                "metrics_path": "/metrics",
            },
        ],
    }
    path = base / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_targets(settings: Settings, name: str, groups: list[dict[str, Any]]) -> None:
    """Replace one file_sd file atomically (Prometheus reads it on change)."""
    folder = targets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(groups, indent=1))
    tmp.replace(folder / f"{name}.json")


def start(settings: Settings, echo: Echo = print) -> int | None:
    prom = binary(settings)
    if prom is None:
        echo(
            "prometheus: not installed (apt-get install prometheus, or set SLUICE_PROMETHEUS_BIN): canaries "
            "will hold at their first step, since the rollout gates need it"
        )
        return None

    def launch() -> tuple[list[str], dict[str, str]]:
        config = write_config(settings)
        cmd = [
            prom,
            f"--config.file={config}",
            f"--storage.tsdb.path={home(settings) / 'data'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={settings.prometheus_host}:{settings.prometheus_port}",
            "--web.enable-lifecycle",
        ]
        return cmd, dict(os.environ)

    write_config(settings)
    return start_service(
        settings,
        "prometheus",
        label="Prometheus",
        url=settings.embedded_prometheus_url,
        address=(settings.prometheus_host, settings.prometheus_port),
        port_env="SLUICE_PROMETHEUS_PORT",
        healthy=lambda: healthy(settings),
        launch=launch,
        timeout=START_TIMEOUT,
        echo=echo,
    )
