"""Shared fixtures: settings in a tmp state dir, and a real embedded platform.

`platform` is session-scoped: one `sluice up` (LocalStack S3, MLflow, Prometheus, the GitOps remote
with its hooks, the CI runner running workflows with act, the cluster stand-in) on free ports for the
whole test run, stopped at the end even when tests fail. Tests that need the env a client would have
(MLflow tracking URI, S3 endpoint and credentials) use `platform_env`. Timers are short (a 2 s CI
tick, 1 s scrapes and polls) so rollouts take seconds per step.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from pipelines.config import Settings, load_settings
from pipelines.platform import localstack, up

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True)
def _no_mlflow_state_between_tests() -> Iterator[None]:
    """Undo MLflow's process-wide state after every test.

    `mlflow.set_tracking_uri` keeps the URI in a module global *and* writes MLFLOW_TRACKING_URI into
    os.environ behind monkeypatch's back; a test pointing it at its own platform otherwise leaves
    every later test talking to a server that has since stopped (seen in CI: registry calls retried
    against a dead port until the 900 s timeout).
    """
    saved = {key: os.environ.get(key) for key in _MLFLOW_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if "mlflow" in sys.modules:
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
        fluent._active_experiment_id = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(state_dir: Path, **overrides: str) -> Settings:
    """Settings for an isolated platform: its own state dir and free ports, dummy S3 credentials."""
    env = {
        "SLUICE_STATE_DIR": str(state_dir),
        "SLUICE_S3_PORT": str(free_port()),
        "SLUICE_MLFLOW_PORT": str(free_port()),
        "SLUICE_PROMETHEUS_PORT": str(free_port()),
        "SLUICE_SERVE_PORT": str(free_port()),
        "SLUICE_INFERENCE_LOG_PORT": str(free_port()),
        "SLUICE_PUSHGATEWAY_PORT": str(free_port()),
        "SLUICE_CONSOLE_PORT": str(free_port()),
        "SLUICE_SCRAPE_INTERVAL": "1",
        "SLUICE_POLL_INTERVAL": "1",
        "SLUICE_CI_TICK": "2",
        "SLUICE_CI_SYNC_TICK": "3",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        **overrides,
    }
    return load_settings(env)


def share_localstack_venv(settings: Settings) -> None:
    """Point the tmp state dir at the developer's LocalStack virtualenv instead of building one per run.

    The shared one lives in the normal state dir (.sluice/ or $SLUICE_STATE_DIR) and is created or
    updated there the way `sluice up` would, so CI pays the ~10 s install once per machine.
    """
    shared = load_settings(os.environ)
    localstack.ensure_localstack_venv(shared)
    link = localstack.localstack_venv(settings)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(localstack.localstack_venv(shared), target_is_directory=True)
    # The CI runner's environment (what `uv sync` fills in every workflow) is shared the same way.
    os.environ.setdefault("SLUICE_CI_VENV", str(shared.state_dir / "ci" / "venv"))
    # The inference-log receiver flushes Parquet every few seconds in tests, not every minute.
    os.environ.setdefault("SLUICE_INFERENCE_LOG_FLUSH_INTERVAL", "2")


def start_platform(settings: Settings) -> None:
    """LocalStack, terraform/storage, MLflow; stops whatever started if a later step fails."""
    share_localstack_venv(settings)
    try:
        up.platform_up(settings)
    except BaseException:
        up.stop_all(settings)
        raise


@contextlib.contextmanager
def running_platform(state_dir: Path) -> Iterator[Settings]:
    """A platform of its own in `state_dir`, stopped on exit whatever happened."""
    settings = make_settings(state_dir)
    start_platform(settings)
    try:
        yield settings
    finally:
        up.stop_all(settings)


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    """Settings with a fresh state dir and free ports; nothing is started."""
    return make_settings(tmp_path / "state")


@pytest.fixture(scope="session")
def settings_factory() -> Callable[..., Settings]:
    """`make_settings(state_dir, **env_overrides)`: isolated Settings with free ports."""
    return make_settings


@pytest.fixture(scope="session")
def platform_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[], AbstractContextManager[Settings]]:
    """`with platform_factory() as settings:` a separate platform, e.g. for tests that stop it."""
    return lambda: running_platform(tmp_path_factory.mktemp("own-platform") / "state")


@pytest.fixture(scope="session")
def own_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A second platform, for the tests that stop its services or need an empty registry. Each such
    test leaves it up again (`up.platform_up`), so they can share it."""
    with running_platform(tmp_path_factory.mktemp("own-platform") / "state") as settings:
        yield settings


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running local platform (LocalStack S3 with the terraform/storage buckets, MLflow server)."""
    with running_platform(tmp_path_factory.mktemp("platform") / "state") as settings:
        yield settings


@pytest.fixture
def platform_env(platform: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`platform`, plus the process env a client needs (tracking URI, S3 endpoint, credentials)."""
    for key, value in platform.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.tracking_uri)
    return platform
