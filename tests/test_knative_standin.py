"""The cluster stand-in's KServe + Knative rules (pipelines/platform/standin/knative.py), step by step
through a canary, a finalize and a three-phase rollback, as ksvc_reconciler.go and PropagateStatus do."""

from __future__ import annotations

from typing import Any

import pytest
from http_helpers import json_server

from pipelines.gitops.manifest import ResolvedVersion, render_inference_service
from pipelines.gitops.release import parse_release
from pipelines.platform.standin import knative
from pipelines.platform.standin.router import pick

GATES = {"max_error_rate": 0.01, "max_p95_latency_ms": 250, "max_mean_relative_divergence": 0.15, "min_requests": 20}
REL = parse_release({"model": "m", "version": 1, "gates": GATES})
V1 = ResolvedVersion("m", "1", "r1", "s3://b/1")
V2 = ResolvedVersion("m", "2", "r2", "s3://b/2")


def doc(v: ResolvedVersion, percent: int | None) -> dict:
    return render_inference_service(REL, v, percent)


def step(svc: knative.Service | None, manifest: dict, ready: set[str]) -> tuple[knative.Service, dict[str, int]]:
    svc = knative.apply_manifest(svc, "m", "ns", manifest)
    targets = knative.route(svc, ready)
    svc = knative.propagate(svc, targets, ready)
    split: dict[str, int] = {}
    for t in targets:
        split[t.revision] = split.get(t.revision, 0) + t.percent
    return svc, {k: v for k, v in split.items() if v}


def test_release_canary_finalize() -> None:
    r1, r2 = "m-predictor-00001", "m-predictor-00002"
    svc, split = step(None, doc(V1, None), set())
    assert split == {} and svc.latest_created and svc.latest_created.name == r1
    svc, split = step(svc, doc(V1, None), {r1})
    assert split == {r1: 100} and svc.latest_rolledout == r1
    # A canary whose revision is not ready yet: latestRevision still resolves to r1.
    svc, split = step(svc, doc(V2, 10), {r1})
    assert split == {r1: 100} and svc.latest_created and svc.latest_created.name == r2
    svc, split = step(svc, doc(V2, 10), {r1, r2})
    assert split == {r2: 10, r1: 90} and svc.latest_rolledout == r1
    svc, split = step(svc, doc(V2, 50), {r1, r2})
    assert split == {r2: 50, r1: 50} and svc.generation == 3
    assert len(svc.revisions) == 2  # a new traffic split is not a new revision
    svc, split = step(svc, doc(V2, None), {r1, r2})
    assert split == {r2: 100} and (svc.latest_rolledout, svc.previous_rolledout) == (r2, r1)


def test_the_rollback_window_and_how_sluice_avoids_it() -> None:
    r1, r2, r3 = "m-predictor-00001", "m-predictor-00002", "m-predictor-00003"
    svc, _ = step(None, doc(V1, None), {r1})
    svc, _ = step(svc, doc(V2, 10), {r1, r2})
    svc, split = step(svc, doc(V2, 0), {r1, r2})  # phase 1: the canary at 0%
    assert split == {r1: 100}
    # What KServe does if phase 2 dropped the field with the restored spec not ready yet: everything
    # goes to the latest READY revision, the rolled-back r2.
    naive, split = step(svc, doc(V1, None), {r1, r2})
    assert naive.latest_created and naive.latest_created.name == r3
    assert split == {r2: 100}
    # Sluice's phase 2 keeps canaryTrafficPercent 0 until r3 is ready: r2 gets nothing at any time.
    svc, split = step(svc, doc(V1, 0), {r1, r2})
    assert split == {r1: 100}
    svc, split = step(svc, doc(V1, 0), {r1, r2, r3})
    assert split == {r1: 100}
    svc, split = step(svc, doc(V1, None), {r1, r2, r3})  # phase 3
    assert split == {r3: 100} and svc.latest_rolledout == r3


def test_status_object_and_failure() -> None:
    svc, _ = step(None, doc(V1, None), {"m-predictor-00001"})
    svc, _ = step(svc, doc(V2, 10), {"m-predictor-00001"})
    obj = knative.status_object(
        svc,
        knative.route(svc, {"m-predictor-00001"}),
        knative.Observed({"m-predictor-00001"}, {"m-predictor-00002": "cannot download"}),
    )
    pred = obj["status"]["components"]["predictor"]
    assert pred["latestCreatedRevision"] == "m-predictor-00002"
    assert pred["latestReadyRevision"] == pred["latestRolledoutRevision"] == "m-predictor-00001"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    assert {
        "type": "PredictorReady",
        "status": "False",
        "reason": "RevisionFailed",
        "message": "cannot download",
    } in obj["status"]["conditions"]


def test_the_router_splits_by_percent() -> None:
    from pipelines.platform.standin.controller import RouteTarget

    targets = (RouteTarget("a", "2", 10, ("x",)), RouteTarget("b", "1", 90, ("y",)), RouteTarget("c", "0", 0, ()))
    picks = [pick(targets, u / 10) for u in range(1000)]
    assert sum(p is not None and p.revision == "a" for p in picks) == 100
    assert not any(p is not None and p.revision == "c" for p in picks)
    assert pick((), 5.0) is None


def test_a_revision_carries_the_predictor_env_the_pods_start_with() -> None:
    """The stand-in's pods get the container env a kubelet would set (plain values; Secrets stay out)."""
    two_cores = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    rel = parse_release({"model": "m", "version": 1, "gates": GATES, "resources": two_cores, "workers": 2})
    manifest = render_inference_service(rel, V1, None)
    manifest["spec"]["predictor"]["model"]["env"].append(
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    )
    svc = knative.apply_manifest(None, "m", "ns", manifest)
    assert svc.latest_created is not None
    assert dict(svc.latest_created.env) == {"SLUICE_MODEL_VERSION": "1", "SLUICE_WORKERS": "2"}


def _upstream() -> tuple[str, Any]:
    """A real HTTP server on 127.0.0.1 that answers every POST with one prediction."""
    return json_server(lambda: (200, {}, b'{"outputs": [{"name": "Sales", "data": [1.0]}]}'))


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


def _post_through_router(controller: Any, republish: Any = None, after: float = 0.0) -> Any:
    import asyncio

    import httpx

    from pipelines.platform.standin.router import build_app

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(controller))
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=30) as client:

            async def swap() -> None:
                await asyncio.sleep(after)
                controller.published = republish

            task = asyncio.create_task(swap()) if republish is not None else None
            answer = await client.post("/v2/models/m/infer", json={"inputs": []})
            if task is not None:
                await task
            return answer

    return asyncio.run(run())


def test_a_refused_connection_goes_again_on_the_route_published_then() -> None:
    """A pod that stopped while the route still named it (the route moves first, then pods stop; a
    request that picked the old route just before): nothing reached a model, so the router retries on
    the current route, as Knative's activator retries a failed dial, instead of answering 502."""
    import types

    from pipelines.platform.standin.controller import Published, Route, RouteTarget

    live, server = _upstream()
    try:
        old = Published(
            routes={"m": Route("m", "c1", (RouteTarget("m-predictor-00001", "1", 100, (_closed_port_url(),)),))}
        )
        new = Published(routes={"m": Route("m", "c2", (RouteTarget("m-predictor-00002", "2", 100, (live,)),))})
        answer = _post_through_router(types.SimpleNamespace(published=old), republish=new, after=0.5)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-sluice-revision"] == "m-predictor-00002"
    finally:
        server.shutdown()


def test_a_pod_that_never_comes_back_is_a_502_naming_the_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from pipelines.platform.standin import router
    from pipelines.platform.standin.controller import Published, Route, RouteTarget

    monkeypatch.setattr(router, "CONNECT_RETRY_SECONDS", 0.3)
    dead = Published(
        routes={"m": Route("m", "c1", (RouteTarget("m-predictor-00001", "1", 100, (_closed_port_url(),)),))}
    )
    answer = _post_through_router(types.SimpleNamespace(published=dead))
    assert answer.status_code == 502
    assert "revision m-predictor-00001 did not answer (ConnectError" in answer.json()["error"]


def test_a_deleted_pod_leaves_the_route_at_once_and_answers_until_it_has_drained(tmp_path: Any) -> None:
    """`kubectl delete pod` as Kubernetes and Knative do it: the endpoint goes first, the pod drains.
    A request that picked the old route just before the delete still finds the pod up, instead of a
    keep-alive connection the stopping server closes under it (the RemoteProtocolError a client saw
    when the pod stopped at once)."""
    import subprocess
    import sys
    import time
    import urllib.request

    from pipelines.config import load_settings
    from pipelines.platform.standin import pods as pods_module
    from pipelines.platform.standin.controller import Controller, Published, Route, RouteTarget
    from pipelines.platform.standin.pods import Pod, Pods, RevisionPods, free_port

    said: list[str] = []
    pods = Pods(tmp_path / "cache", tmp_path / "logs", {}, 2, said.append)
    controller = Controller(load_settings({"SLUICE_STATE_DIR": str(tmp_path)}), pods, said.append)
    rev = knative.Revision("m-predictor-00001", "d", "1", "s3://b/m/1", 2, 1)
    rp = RevisionPods(rev, "m", model_dir=tmp_path)
    for i in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        rp.pods.append(Pod(f"pod-{i}", rev, "m", port, 0, proc, (tmp_path / f"{i}.log").open("ab"), ready=True))
    pods._revs[rev.name] = rp
    gone, kept = rp.pods

    def answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    deadline = time.monotonic() + 20
    while not (answers(gone.url) and answers(kept.url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    controller.published = Published({"m": Route("m", "c", (RouteTarget(rev.name, "1", 100, (gone.url, kept.url)),))})
    try:
        assert controller.delete_pod("pod-0") and not controller.delete_pod("no-such-pod")
        assert controller.published.routes["m"].targets[0].endpoints == (kept.url,)
        assert pods.endpoints(rev.name) == [kept.url]
        assert gone.proc.poll() is None and answers(gone.url), "a deleted pod answers while it drains"
        gone.proc.wait(timeout=pods_module.DRAIN_SECONDS + pods_module.STOP_GRACE + 5)
        assert kept.proc.poll() is None
    finally:
        pods.stop_all()
    assert kept.proc.poll() is not None and gone.proc.poll() is not None
    assert any("pod-0 deleted" in line for line in said)
