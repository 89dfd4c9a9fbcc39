"""Every process the embedded platform starts listens on loopback only (pipelines/security/listeners.py).

Real platform (`sluice up` in a temporary state dir), with at least one runtime pod serving: the
stand-in's pods are the platform's most numerous listeners, so a model is released by `git push`
when none serves yet. Then every listening socket of every process in every service's session is
listed with psutil; anything on 0.0.0.0, :: or another address fails the test with the process
named. The runtime pods' gRPC ports are included: KServe's own gRPC server binds [::] whatever the
host, the runtime's binds its --host (serving/grpc_service.py).

Cost: the platform is shared with the other integration tests; releasing a model when none serves
takes ~30-60 s (training a quick model, CI under act, the pod's start).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.security import listeners


def _running_pods(settings: Settings) -> list[dict]:  # type: ignore[type-arg]
    with urllib.request.urlopen(settings.serve_url + "/sluice/standin", timeout=5) as resp:
        status = json.loads(resp.read())
    return [pod for revision in status["pods"] for pod in revision["pods"] if pod["ready"]]


def _release_a_model(settings: Settings, clone: Path) -> None:
    """Register a quick model and release it by git push, the way a person would."""
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env
    from pipelines.platform.traffic import wait_until_served
    from pipelines.platform.workspace import Workspace

    model = f"loopback-{uuid.uuid4().hex[:6]}"
    export_client_env(settings)
    registered = log_and_register(train(generate(stores=5, days=120, seed=5), TrainConfig.quick()), model)
    assert registered is not None
    work = Workspace(settings.gitops_url, clone, name="alice")
    work.add_model(model)
    work.set_release(model, version=registered.version)
    work.commit(f"{model}: release {registered.version}")
    pushed = work.push()
    assert pushed.ok, pushed.output
    wait_until_served(settings.serve_url, model, registered.version, timeout=240)


@pytest.mark.integration
@pytest.mark.slow
def test_every_platform_process_listens_on_loopback_only(platform_env: Settings, tmp_path: Path) -> None:
    if not _running_pods(platform_env):
        _release_a_model(platform_env, tmp_path / "clone")
    pods = _running_pods(platform_env)
    assert pods

    found = listeners.platform_listeners(platform_env)
    print("\n".join(listener.describe() for listener in found))  # shown with -s, and on failure

    by_service = {listener.service for listener in found}
    assert {"localstack", "mlflow", "prometheus", "standin"} <= by_service, by_service
    pod_pids = {pod["pid"] for pod in pods}
    pod_ports = {listener.port for listener in found if listener.pid in pod_pids}
    for pod in pods:  # the runtime pods are seen, HTTP and gRPC
        assert int(pod["url"].rsplit(":", 1)[1]) in pod_ports and pod["grpc_port"] in pod_ports, pod
    exposed = [listener.describe() for listener in found if not listener.loopback]
    assert not exposed, "listening beyond loopback:\n" + "\n".join(exposed)


def test_what_counts_as_loopback() -> None:
    def on(address: str) -> listeners.Listener:
        return listeners.Listener("standin", 1, ("python", "-m", "serving"), "tcp", address, 8081)

    assert on("127.0.0.1").loopback and on("127.0.0.53").loopback and on("::1").loopback
    assert on("::ffff:127.0.0.1").loopback  # an IPv4-mapped loopback address on an IPv6 socket
    for address in ("0.0.0.0", "::", "192.168.1.20", "::ffff:10.0.0.1", "fe80::1%eth0"):
        assert not on(address).loopback, address
