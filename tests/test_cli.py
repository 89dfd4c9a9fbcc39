"""The `sluice` command line: every subcommand explains itself, and the config reads env vars."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.cli import build_parser
from pipelines.config import load_settings

_TOP = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
SUBCOMMANDS = sorted(_TOP)
CI_STEPS = sorted(_TOP["ci"]._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
EVERY = [[c] for c in SUBCOMMANDS] + [["ci", s] for s in CI_STEPS]


def test_every_subcommand_is_listed() -> None:
    assert {"up", "down", "status", "train", "evaluate", "serve", "ci", "history"} <= set(SUBCOMMANDS)
    assert {"check", "promote", "rollout", "sync", "run", "log", "jobs"} <= set(CI_STEPS)


@pytest.mark.parametrize("command", EVERY, ids=" ".join)
def test_help(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: sluice " + " ".join(command))
    assert len(out.stdout.splitlines()) > 3


def test_settings_defaults_and_overrides() -> None:
    default = load_settings({})
    assert default.s3_endpoint_url == "http://127.0.0.1:4566"
    assert default.tracking_uri == "http://127.0.0.1:5000"
    assert default.artifact_root == "s3://sluice-models/"
    aws = load_settings({"SLUICE_S3_ENDPOINT_OVERRIDE": "0", "MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    assert aws.s3_endpoint_url is None and "MLFLOW_S3_ENDPOINT_URL" not in aws.aws_env()
    assert aws.tracking_uri == "sqlite:///x.db"
    shared = load_settings({"MLFLOW_S3_ENDPOINT_URL": "http://minio:9000"})
    assert shared.aws_env()["S3_ENDPOINT"] == "minio:9000"
