"""The stand-in's ingress: one V2 endpoint per model that splits requests between revisions the way
Knative's route does, proxying each to a ready pod of the chosen revision.

Responses carry `x-sluice-revision` (the Knative revision name), `x-sluice-version` and
`x-sluice-commit`, so a client sees the split. The router counts what it sees per revision in
`sluice_router_requests_total{model, revision, code}`: requests a pod never answered (refused,
reset, timed out: Knative's queue-proxy and activator see these in a cluster) count as failures of
that revision, except a refused connection, which nothing reached: it is retried against the route as
published then (for up to CONNECT_RETRY_SECONDS), as Knative's activator retries a failed dial, so a
pod stopping between the route's update and the request's pick costs no answer. It also answers the
Kubernetes API path of InferenceServices with the status the
controller computes, which is how `sluice ci rollout` reads the cluster's view locally.

Payload logging: when the manifest sets `spec.predictor.logger`, the router does what KServe's agent
does in each pod: every request and its response go to the inference-log receiver as binary-mode
CloudEvents sharing one id (`org.kubeflow.serving.inference.request|response`, extensions
`inferenceservicename`, `namespace`, `component`, `endpoint`), plus `revision`, which the stand-in
knows. Posted in the background: a slow or absent receiver never delays an answer.

Mirroring (`gates.mirror_percent` in the release file, `sluice.dev/mirror-percent` on the manifest):
that share of the requests answered by the stable revision is also sent to the canary in the
background; the canary's answer is discarded, and the two predictions of each row are compared
(`sluice_mirror_divergence_sum/_count`), so the divergence gate judges the same inputs. Knative cannot
do this; in a cluster the gate compares the two revisions' mean predictions over the same window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.gitops.manifest import NAMESPACE
from pipelines.platform.standin.controller import Controller, RouteTarget

REVISION_HEADER = "x-sluice-revision"
VERSION_HEADER = "x-sluice-version"
COMMIT_HEADER = "x-sluice-commit"
STATUS_PATH = "/sluice/standin"
MAX_BODY = 64 * 1024 * 1024
# A refused connection (a stopping pod still in the route) goes again, against the route as it is then,
# for this long: the controller republishes routes every second.
CONNECT_RETRY_SECONDS = 3.0
CONNECT_RETRY_PAUSE = 0.1
_FORWARD = ("content-type", "inference-header-content-length", "accept", "accept-encoding", "x-request-id")
_RETURN = ("content-type", "inference-header-content-length", "content-encoding")


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sluice_router_requests",
            "Requests the stand-in's router sent to a revision, by HTTP status (502/504: no answer from the pod).",
            ["model", "revision", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_router_request_duration_seconds",
            "Time through the router, proxying included.",
            ["model", "revision"],
            registry=self.registry,
        )
        self.logged = Counter(
            "sluice_payload_events",
            "CloudEvents posted to the inference-log receiver, by its HTTP status.",
            ["model", "code"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "sluice_mirror_requests",
            "Copies of stable requests sent to the canary, by the canary's HTTP status.",
            ["model", "revision", "code"],
            registry=self.registry,
        )
        self.divergence_sum = Counter(
            "sluice_mirror_divergence_sum",
            "Sum over mirrored rows of |canary - stable| / |stable| prediction.",
            ["model", "revision"],
            registry=self.registry,
        )
        self.divergence_count = Counter(
            "sluice_mirror_divergence_count",
            "Mirrored rows compared (both revisions answered).",
            ["model", "revision"],
            registry=self.registry,
        )


def pick(targets: tuple[RouteTarget, ...], u: float) -> RouteTarget | None:
    """The target for a uniform random number `u` in [0, 100), by percent (0% targets never)."""
    acc = 0.0
    for t in targets:
        acc += t.percent
        if u < acc:
            return t
    return None


def predictions(body: bytes) -> list[float] | None:
    """The first output's values of a V2 JSON response (None: not JSON, or not numbers)."""
    try:
        data = json.loads(body)
        values = data["outputs"][0]["data"]
        return [float(v) for v in values]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def paired_divergence(canary: list[float], stable: list[float]) -> tuple[float, int]:
    """(sum of |c - s| / |s|, rows compared); rows where stable predicts 0 are skipped."""
    pairs = [(c, s) for c, s in zip(canary, stable, strict=False) if s != 0]
    return sum(abs(c - s) / abs(s) for c, s in pairs), len(pairs)


def build_app(controller: Controller, rng: random.Random | None = None) -> Starlette:
    metrics = RouterMetrics()
    rand = rng or random.Random()
    rr = itertools.count()
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=2.0), limits=httpx.Limits(max_connections=256))

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def proxy(request: Request) -> Response:
        model = request.path_params["model"]
        if model not in controller.published.routes:
            return error(404, f"model {model!r} is not served (no InferenceService named so at the followed commit)")
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f"body: {len(body)} bytes is over the router's limit of {MAX_BODY}")
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARD}
        deadline = time.monotonic() + CONNECT_RETRY_SECONDS
        while True:
            # The route as published now: a retry sees the route that no longer names a stopped pod.
            route = controller.published.routes.get(model)
            if route is None:
                return error(
                    404, f"model {model!r} is not served (no InferenceService named so at the followed commit)"
                )
            target = pick(route.targets, rand.random() * 100)
            if target is None:
                return error(503, f"{model}: no revision is ready yet")
            if not target.endpoints:
                metrics.requests.labels(model, target.revision, "503").inc()
                return error(503, f"{model}: revision {target.revision} has no ready pod")
            url = target.endpoints[next(rr) % len(target.endpoints)] + request.url.path
            if request.url.query:
                url += "?" + request.url.query
            started = time.perf_counter()
            retry = False
            try:
                upstream = await client.request(request.method, url, content=body, headers=headers)
                break
            except httpx.ConnectError as exc:
                # Refused before anything was sent: a pod stopping while this request picked the route
                # that still named it. Nothing reached a model, so it goes again, as Knative's activator
                # retries a failed dial; a request a pod took in is never sent twice.
                retry = time.monotonic() < deadline
                if retry:
                    await asyncio.sleep(CONNECT_RETRY_PAUSE)
                    continue
                metrics.requests.labels(model, target.revision, "502").inc()
                return error(502, f"{model}: revision {target.revision} did not answer ({type(exc).__name__}: {exc})")
            except httpx.TimeoutException as exc:
                metrics.requests.labels(model, target.revision, "504").inc()
                return error(504, f"{model}: revision {target.revision} did not answer in time ({type(exc).__name__})")
            except httpx.HTTPError as exc:
                metrics.requests.labels(model, target.revision, "502").inc()
                return error(502, f"{model}: revision {target.revision} did not answer ({type(exc).__name__}: {exc})")
            finally:
                if not retry:  # an attempt that reached no pod is not a latency of that revision
                    metrics.latency.labels(model, target.revision).observe(time.perf_counter() - started)
        metrics.requests.labels(model, target.revision, str(upstream.status_code)).inc()
        canary = route.target("canary")
        if (
            target.role == "stable"
            and canary is not None
            and canary.endpoints
            and upstream.status_code == 200
            and rand.random() * 100 < route.mirror_percent
        ):
            task = asyncio.create_task(mirror(model, canary, request.url.path, body, headers, upstream.content))
            background.add(task)
            task.add_done_callback(background.discard)
        if route.log_url and request.method == "POST":
            task = asyncio.create_task(
                log_pair(route, target, headers, body, upstream.headers.get("content-type", ""), upstream.content)
            )
            background.add(task)
            task.add_done_callback(background.discard)
        out = {k: v for k, v in upstream.headers.items() if k.lower() in _RETURN}
        out |= {REVISION_HEADER: target.revision, VERSION_HEADER: target.version, COMMIT_HEADER: route.commit}
        return Response(upstream.content, status_code=upstream.status_code, headers=out)

    background: set[asyncio.Task[None]] = set()

    async def mirror(
        model: str, canary: RouteTarget, path: str, body: bytes, headers: dict[str, str], stable: bytes
    ) -> None:
        """Send a copy to the canary; compare its predictions with the stable's on the same rows."""
        url = canary.endpoints[next(rr) % len(canary.endpoints)] + path
        try:
            answer = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            metrics.mirrored.labels(model, canary.revision, "502").inc()
            return
        metrics.mirrored.labels(model, canary.revision, str(answer.status_code)).inc()
        c, s = predictions(answer.content), predictions(stable)
        if answer.status_code == 200 and c is not None and s is not None:
            total, rows = paired_divergence(c, s)
            if rows:
                metrics.divergence_sum.labels(model, canary.revision).inc(total)
                metrics.divergence_count.labels(model, canary.revision).inc(rows)

    async def log_pair(
        route: Any, target: RouteTarget, headers: dict[str, str], body: bytes, out_type: str, answer: bytes
    ) -> None:
        """What KServe's agent does beside every pod: post the request and the response as binary-mode
        CloudEvents sharing one id (the receiver pairs them)."""
        event_id = headers.get("x-request-id") or uuid.uuid4().hex
        attrs = {
            "id": event_id,
            "source": f"http://localhost:9081/{route.model}",
            "inferenceservicename": route.model,
            "namespace": NAMESPACE,
            "component": "predictor",
            "endpoint": "canary" if target.role == "canary" else "default",
            "revision": target.revision,  # not in KServe's events: the stand-in knows it, so it says it
        }
        pairs = (
            ("org.kubeflow.serving.inference.request", headers.get("content-type", "application/json"), body),
            ("org.kubeflow.serving.inference.response", out_type or "application/json", answer),
        )
        for kind, content_type, data in pairs:
            event = CloudEvent({**attrs, "type": kind, "datacontenttype": content_type}, data)
            ce_headers, ce_body = to_binary(event)
            try:
                answer_ = await client.post(route.log_url, content=ce_body, headers=dict(ce_headers))
                metrics.logged.labels(route.model, str(answer_.status_code)).inc()
            except httpx.HTTPError:
                metrics.logged.labels(route.model, "unreachable").inc()

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> JSONResponse:
        routes = controller.published.routes
        ok = bool(routes) and all(any(t.endpoints for t in r.targets) for r in routes.values())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(_: Request) -> JSONResponse:
        return JSONResponse({"name": "sluice-standin", "version": "local", "extensions": []})

    async def prom(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def isvc(request: Request) -> JSONResponse:
        obj = controller.published.objects.get(request.path_params["name"])
        if obj is None or obj.get("metadata", {}).get("namespace") != request.path_params["namespace"]:
            return JSONResponse(
                {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}, status_code=404
            )
        return JSONResponse(obj)

    async def isvc_list(request: Request) -> JSONResponse:
        ns = request.path_params["namespace"]
        items = [o for o in controller.published.objects.values() if o.get("metadata", {}).get("namespace") == ns]
        return JSONResponse({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceServiceList", "items": items})

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(controller.status())

    async def delete_pod(request: Request) -> JSONResponse:
        name = request.path_params["pod"]
        if await asyncio.to_thread(controller.delete_pod, name):
            return JSONResponse({"deleted": name})
        return error(404, f"no pod named {name!r}")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    isvc_path = "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"
    routes: list[Any] = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{model}", proxy, methods=["GET"]),
        Route("/v2/models/{model}/ready", proxy, methods=["GET"]),
        Route("/v2/models/{model}/infer", proxy, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}", proxy, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/infer", proxy, methods=["POST"]),
        Route("/metrics", prom, methods=["GET"]),
        Route(isvc_path, isvc_list, methods=["GET"]),
        Route(isvc_path + "/{name}", isvc, methods=["GET"]),
        Route(STATUS_PATH, status, methods=["GET"]),
        Route(STATUS_PATH + "/pods/{pod}", delete_pod, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
