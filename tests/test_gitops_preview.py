"""`sluice serve --gitops` without services: what it reads from Git, and how it routes, in process.

The repository is real (bare remote + clone, the rollout driven by the real promote()/step() with a
sqlite MLflow registry, as in test_rollout). The registered versions name s3:// URIs that do not
exist; the preview's fetcher maps each to a real model directory trained here, so the routing and
the per-version metrics are the real runtime's. The whole thing over HTTP against LocalStack and an
MLflow server is tests/test_e2e_story.py.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_helpers import Repos, git, make_repos
from kserve.model_repository import ModelRepository
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import generate_latest

from pipelines.metrics_source import parse_exposition
from pipelines.preview import request_rows, v2_body
from pipelines.promote import ArtifactReport, promote
from pipelines.registry_client import MlflowRegistry
from pipelines.rollout import step
from serving.gitops_preview import (
    COMMIT_HEADER,
    REVISION_HEADER,
    VERSION_HEADER,
    Declared,
    GitOpsPreview,
    Revision,
    RevisionRouter,
    declared_at,
    git_head,
)
from serving.metrics import ServingMetrics

MODEL = "rossmann"
MLMODEL = 'flavors: {python_function: {}}\nsignature:\n  inputs: \'[{"type": "long", "name": "Store"}]\'\n'


def uri(v: int) -> str:
    return f"s3://sluice-models/1/models/m-{v}/artifacts"


@pytest.fixture(scope="module")
def raw() -> Any:
    from model.synthetic import generate

    return generate(stores=5, days=150, seed=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, raw: Any) -> Path:
    from model.pyfunc import save_pyfunc
    from model.training import TrainConfig, train

    path = tmp_path_factory.mktemp("preview") / "model"
    save_pyfunc(train(raw, TrainConfig.quick(), progress=False), path)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowRegistry]:
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    tracking = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.create_registered_model(MODEL)
    for v in (1, 2, 3):
        client.create_model_version(MODEL, source=uri(v), run_id=None)
    yield MlflowRegistry(tracking, client)


def present(_: str) -> ArtifactReport:
    return ArtifactReport(True, MLMODEL, "ok")


def passes(*_: Any) -> tuple[bool, str]:
    return True, "RMSPE ok"


class FakeTraffic:
    """Counters as a runtime would expose them, to drive step() without sending requests."""

    def __init__(self) -> None:
        self.metrics = ServingMetrics()

    def serve(self, version: str, n: int, value: float = 5000.0) -> None:
        import numpy as np

        b = self.metrics.bind(MODEL, version)
        for _ in range(n):
            b.observe_request("ok", 0.005)
        b.observe_predictions(np.full(n, value))

    def snapshot(self) -> Any:
        return parse_exposition(generate_latest(self.metrics.registry).decode(), MODEL)


def request(rows: Any) -> InferRequest:
    body = v2_body(rows)
    return InferRequest(MODEL, [InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in body["inputs"]])


def within_binomial(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def call(router: RevisionRouter, req: InferRequest) -> tuple[Any, dict[str, str]]:
    return asyncio.run(router(req))  # type: ignore[no-any-return]


def test_declared_state_follows_the_rollout(tmp_path: Path, registry: MlflowRegistry) -> None:
    """At each commit of a real rollout, the preview reads the stable and canary revisions Git declares."""
    repos = make_repos(tmp_path, MODEL)
    kw: dict[str, Any] = {"gate": passes, "artifacts": present, "push": True}

    def at_head(where: Path | None = None) -> Declared | None:
        repo = where or repos.work
        head = git_head(repo)
        assert head is not None
        return declared_at(repo, head, MODEL)

    assert at_head() is None  # nothing released yet
    assert promote(repos.work, registry, MODEL, "1", **kw).action == "promote"
    v1 = Revision(MODEL, "1", uri(1))
    assert at_head() == Declared(MODEL, v1)
    assert promote(repos.work, registry, MODEL, "2", **kw).action == "promote"
    v2 = Revision(MODEL, "2", uri(2))
    assert at_head() == Declared(MODEL, v1, v2, 10)
    assert at_head().describe() == "rossmann-v1 90% (stable), rossmann-v2 10% (canary)"  # type: ignore[union-attr]
    # The bare remote declares the same: the preview can follow what was pushed, as ArgoCD does.
    assert at_head(repos.remote) == Declared(MODEL, v1, v2, 10)

    t = FakeTraffic()
    t.serve("2", 300)
    t.serve("1", 3000)
    assert step(repos.work, registry, MODEL, t.snapshot).action == "advance"
    assert at_head() == Declared(MODEL, v1, v2, 50)
    t.serve("2", 300)
    t.serve("1", 300)
    assert step(repos.work, registry, MODEL, t.snapshot).action == "advance"
    assert at_head() == Declared(MODEL, v1, v2, 100)
    assert [r.version for _, r, _ in at_head().serving()] == ["2"]  # type: ignore[union-attr]
    t.serve("2", 300)
    assert step(repos.work, registry, MODEL, t.snapshot).action == "finalize"
    assert at_head() == Declared(MODEL, v2)

    assert promote(repos.work, registry, MODEL, "3", force=True, reason="test", **kw).action == "promote"
    v3 = Revision(MODEL, "3", uri(3))
    assert at_head() == Declared(MODEL, v2, v3, 10)
    t.serve("3", 300, value=0.0)
    t.serve("2", 3000)
    assert step(repos.work, registry, MODEL, t.snapshot).action == "rollback"
    rolled_back = at_head()
    assert rolled_back == Declared(MODEL, v2, v3, 0)
    assert rolled_back is not None and [r.version for _, r, _ in rolled_back.serving()] == ["2"]
    assert step(repos.work, registry, MODEL, t.snapshot).action == "rollback"  # phase 2: restore
    assert at_head() == Declared(MODEL, v2)


def test_a_canary_without_a_rolled_out_revision_takes_everything(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    folder = repo / "gitops" / "models" / MODEL
    folder.mkdir(parents=True)
    doc = {
        "kind": "InferenceService",
        "metadata": {"name": MODEL, "annotations": {"sluice.dev/version": "4"}},
        "spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": uri(4)}}},
    }
    (folder / "inferenceservice.yaml").write_text(yaml.safe_dump(doc))
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "--quiet", "-m", "hand-written")
    head = git_head(repo)
    assert head is not None
    assert declared_at(repo, head, MODEL) == Declared(MODEL, None, Revision(MODEL, "4", uri(4)), 100)


def test_routes_by_the_declared_share_and_follows_commits(
    tmp_path: Path, registry: MlflowRegistry, model_dir: Path, raw: Any
) -> None:
    repos: Repos = make_repos(tmp_path, MODEL)
    kw: dict[str, Any] = {"gate": passes, "artifacts": present}
    fetched: list[str] = []

    def fetch(rev: Revision) -> Path:
        fetched.append(rev.storage_uri)
        if rev.version == "broken":
            raise RuntimeError("download failed")
        return model_dir

    models = ModelRepository()
    said: list[str] = []
    preview = GitOpsPreview(repos.work, fetch, models, ServingMetrics(), say=said.append, rng=random.Random(1))
    assert preview.sync() is False and models.get_model(MODEL) is None  # an empty repo serves nothing

    promote(repos.work, registry, MODEL, "1", **kw)
    assert preview.sync() is True
    router = models.get_model(MODEL)
    assert isinstance(router, RevisionRouter) and router.versions() == ["1"]
    assert "rossmann-v1 100% (stable)" in said[-1]
    req = request(request_rows(raw.train).head(3))
    response, headers = call(router, req)
    assert headers[REVISION_HEADER] == "rossmann-v1" and headers[VERSION_HEADER] == "1"
    assert headers[COMMIT_HEADER] == repos.head() and response.model_version == "1"

    promote(repos.work, registry, MODEL, "2", **kw)
    assert preview.sync() is True and router.versions() == ["1", "2"]
    assert models.get_model(MODEL) is router  # same model object: in-flight requests are unaffected
    # Through the model (each call predicts for real, so not too many), then the pick alone.
    n = 300
    seen = Counter(call(router, req)[1][REVISION_HEADER] for _ in range(n))
    k = seen["rossmann-v2"]
    assert within_binomial(k, n, 0.10), seen
    assert router.routes is not None
    rng = random.Random(7)
    picks = Counter(router.routes.pick(rng.random()).version for _ in range(20_000))
    assert within_binomial(picks["2"], 20_000, 0.10), picks
    # One /metrics for both revisions, labelled by version: what `rollout step --metrics-url` reads.
    snap = parse_exposition(generate_latest(preview.metrics.registry).decode(), MODEL)
    assert snap.get("2").total == k and snap.get("1").total == n - k + 1

    # A new commit that changes nothing served (a hold) reloads nothing.
    git(repos.work, "commit", "--quiet", "--allow-empty", "-m", "hold")
    fetched.clear()
    assert preview.sync() is False and fetched == [] and "no change" in said[-1]

    # 0% sends everything back to stable and unloads the canary.
    manifest = yaml.safe_load(repos.manifest.read_text())
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 0
    repos.manifest.write_text(yaml.safe_dump(manifest))
    git(repos.work, "commit", "--quiet", "-am", "zero")
    assert preview.sync() is True and router.versions() == ["1"]
    assert {call(router, req)[1][REVISION_HEADER] for _ in range(50)} == {"rossmann-v1"}
    info = generate_latest(preview.metrics.registry).decode()
    served = [line for line in info.splitlines() if line.startswith("sluice_model_info{")]
    assert len(served) == 1 and 'version="1"' in served[0]

    # A commit that cannot be served leaves the previous state serving; the error is reported by follow().
    manifest["metadata"]["annotations"]["sluice.dev/version"] = "broken"
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 50
    repos.manifest.write_text(yaml.safe_dump(manifest))
    git(repos.work, "commit", "--quiet", "-am", "broken")
    with pytest.raises(RuntimeError, match="download failed"):
        preview.sync()
    assert router.versions() == ["1"] and preview.commit != repos.head()

    # The manifest goes away: the model is no longer served.
    git(repos.work, "rm", "--quiet", "-r", "gitops/models")
    git(repos.work, "commit", "--quiet", "-m", "remove")
    assert preview.sync() is True and models.get_model(MODEL) is None
    assert preview.status()["models"] == {} and preview.status()["commit"] == repos.head()
