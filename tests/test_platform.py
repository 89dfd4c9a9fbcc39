"""The local platform: terraform/storage checks, and `up`/`down`/`status` against real services."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import REPO_ROOT, Settings
from pipelines.platform import localstack, mlflow_server, processes, s3_mirror, status, terraform, up
from pipelines.registry import s3_client

STACK = REPO_ROOT / "terraform" / "storage"
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")


# --- fast checks ---------------------------------------------------------------------------------


@needs_terraform
def test_storage_stack_is_formatted() -> None:
    proc = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", "-recursive", str(STACK)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_terraform
def test_storage_stack_validates(tmp_settings: Settings) -> None:
    env = terraform.terraform_env(tmp_settings)
    chdir = f"-chdir={STACK}"
    init = subprocess.run(
        ["terraform", chdir, "init", "-backend=false", "-input=false", "-no-color"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    val = subprocess.run(["terraform", chdir, "validate", "-no-color"], env=env, capture_output=True, text=True)
    assert val.returncode == 0, val.stdout + val.stderr
    # Nothing but the committed lock file may be written into the repository.
    assert not (STACK / ".terraform").exists()


def test_terraform_cli_config_uses_the_mirror(tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TF_MIRROR", "/some/mirror")
    text = terraform.write_terraform_cli_config(tmp_settings).read_text()
    assert 'path    = "/some/mirror"' in text
    assert 'exclude = ["registry.terraform.io/hashicorp/aws"]' in text


def test_terraform_vars_switch_between_localstack_and_aws(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    local = settings_factory(tmp_path)
    assert f"s3_endpoint=http://127.0.0.1:{local.s3_port}" in terraform.terraform_vars(local)
    aws = settings_factory(tmp_path, SLUICE_S3_ENDPOINT_OVERRIDE="0")
    assert "s3_endpoint=" in terraform.terraform_vars(aws)
    assert not localstack.manages_localstack(aws)
    shared = settings_factory(tmp_path, MLFLOW_S3_ENDPOINT_URL="http://s3.example:9000")
    assert "s3_endpoint=http://s3.example:9000" in terraform.terraform_vars(shared)
    assert not localstack.manages_localstack(shared)
    assert localstack.manages_localstack(local)


def test_localstack_writes_only_under_the_state_dir(tmp_settings: Settings) -> None:
    env = localstack.localstack_env(tmp_settings)
    assert env["OVERRIDE_IN_DOCKER"] == "0"
    assert Path(env["FILESYSTEM_ROOT"]).is_relative_to(tmp_settings.state_dir)
    assert env["GATEWAY_LISTEN"] == f"127.0.0.1:{tmp_settings.s3_port}"


def test_mlflow_serves_s3_uris_not_proxied_artifacts(tmp_settings: Settings) -> None:
    cmd = mlflow_server.mlflow_command(tmp_settings)
    assert "--no-serve-artifacts" in cmd
    assert cmd[cmd.index("--default-artifact-root") + 1] == "s3://sluice-models/"
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith(f"sqlite:///{tmp_settings.state_dir}")


def test_status_on_a_stopped_platform_says_what_to_do(
    tmp_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert up.cmd_status(argparse.Namespace(), tmp_settings) == 1
    err = capsys.readouterr().err
    assert "sluice up" in err


# --- against real services -----------------------------------------------------------------------


def _log_tiny_model(settings: Settings, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Register one version of a trivial pyfunc model; returns the version number."""
    import mlflow

    class Identity(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        # list[...] hints are what MLflow 3 wants to derive a signature without warnings.
        def predict(self, context: Any, model_input: list[str], params: dict[str, str] | None = None) -> list[str]:
            return model_input

    for key, value in settings.aws_env().items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow.set_experiment("platform-tests")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Identity(),
            pip_requirements=["mlflow"],  # skip requirement inference: slow and irrelevant here
            registered_model_name=name,
        )
    assert info.registered_model_version is not None
    return str(info.registered_model_version)


def _delete_prefix(settings: Settings, uri: str) -> None:
    s3 = s3_client(settings)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/")
    objects = [{"Key": o["Key"]} for o in listed.get("Contents", [])]
    assert objects, f"nothing under {uri}"
    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})


@pytest.mark.integration
def test_apply_creates_versioned_models_bucket(platform: Settings) -> None:
    states = {b.name: b for b in status.bucket_states(platform)}
    assert states["sluice-models"].exists
    assert states["sluice-models"].versioning == "Enabled"
    assert states["sluice-data"].exists
    assert not (STACK / ".terraform").exists()
    assert (platform.state_dir / "terraform" / "storage.tfstate").exists()


@pytest.mark.integration
def test_status_detects_versions_whose_artifacts_are_gone(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"platform-test-{uuid.uuid4().hex[:8]}"
    version = _log_tiny_model(platform, name, monkeypatch)
    mine = [c for c in status.check_registry_artifacts(platform) if c.model == name]
    assert [(c.version, c.ok) for c in mine] == [(version, True)]
    assert mine[0].uri.startswith("s3://sluice-models/")

    _delete_prefix(platform, mine[0].uri)
    mine = [c for c in status.check_registry_artifacts(platform) if c.model == name]
    assert [(c.version, c.ok, c.detail) for c in mine] == [(version, False, "MISSING")]


@pytest.mark.integration
def test_up_twice_is_idempotent(own_platform: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    pids = {s: processes.running_pid(own_platform, s) for s in ("localstack", "mlflow")}
    assert up.cmd_up(argparse.Namespace(), own_platform) == 0
    out = capsys.readouterr().out
    assert "localstack: already running" in out
    assert "mlflow: already running" in out
    assert "No changes" in out
    assert {s: processes.running_pid(own_platform, s) for s in pids} == pids


@pytest.mark.integration
def test_status_exit_code_follows_missing_artifacts(
    own_platform: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert up.cmd_status(argparse.Namespace(), own_platform) == 0
    version = _log_tiny_model(own_platform, "rossmann", monkeypatch)
    capsys.readouterr()
    assert up.cmd_status(argparse.Namespace(), own_platform) == 0
    assert "ok" in capsys.readouterr().out

    uri = next(c.uri for c in status.check_registry_artifacts(own_platform) if c.model == "rossmann")
    _delete_prefix(own_platform, uri)
    assert up.cmd_status(argparse.Namespace(), own_platform) == 1
    captured = capsys.readouterr()
    assert "MISSING" in captured.out
    assert f"rossmann v{version}" in captured.err
    assert "make train" in captured.err


@pytest.mark.integration
def test_down_then_up_keeps_every_model(own_platform: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalStack community keeps S3 in memory; the on-disk mirror puts the objects back."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    version = _log_tiny_model(own_platform, name, monkeypatch)
    up.stop_all(own_platform)
    assert not localstack.localstack_healthy(own_platform)
    assert not mlflow_server.mlflow_healthy(own_platform)
    for port in (own_platform.s3_port, own_platform.mlflow_port, own_platform.serve_port, own_platform.prometheus_port):
        assert not processes.port_in_use("127.0.0.1", port)
    assert processes.running_pid(own_platform, "localstack") is None

    up.platform_up(own_platform)
    states = {b.name: b for b in status.bucket_states(own_platform)}
    assert states["sluice-models"].exists and states["sluice-models"].versioning == "Enabled"
    mine = [c for c in status.check_registry_artifacts(own_platform) if c.model == name]
    assert [(c.version, c.ok) for c in mine] == [(version, True)]


@pytest.mark.integration
def test_a_crashed_localstack_loses_nothing_the_mirror_copied(
    own_platform: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"crash-{uuid.uuid4().hex[:8]}"
    version = _log_tiny_model(own_platform, name, monkeypatch)
    time.sleep(s3_mirror.INTERVAL * 2 + 1)  # what the mirror promises: copied within an interval
    pid = processes.running_pid(own_platform, "localstack")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while localstack.localstack_healthy(own_platform) and time.monotonic() < deadline:
        time.sleep(0.2)
    up.platform_up(own_platform)  # `sluice up` again: LocalStack restarts empty, the mirror refills it
    mine = [c for c in status.check_registry_artifacts(own_platform) if c.model == name]
    assert [(c.version, c.ok) for c in mine] == [(version, True)]
