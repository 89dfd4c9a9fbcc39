"""Rollout decisions and their commits, on real git repositories (bare remote + clone) and a real
MLflow registry (local sqlite store, versions registered with s3:// sources).

Metrics snapshots come from the runtime's own ServingMetrics, rendered as Prometheus text and parsed
back, so the gate inputs are exactly what a runtime's /metrics would give.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from gitops_helpers import Repos, git, make_repos
from prometheus_client import generate_latest

from pipelines import gitrepo
from pipelines.metrics_source import (
    MetricsSnapshot,
    histogram_quantile,
    parse_exposition,
    read_metrics,
)
from pipelines.promote import ArtifactReport, GitState, format_history, history, promote
from pipelines.registry_client import MlflowRegistry
from pipelines.release import parse_release
from pipelines.rollout import decide, next_step, status, step
from serving.metrics import ServingMetrics

MODEL = "rossmann"
MLMODEL = 'flavors: {python_function: {}}\nsignature:\n  inputs: \'[{"type": "long", "name": "Store"}]\'\n'


# --- snapshots ------------------------------------------------------------------------------------


class Traffic:
    """A runtime's metrics that tests feed like requests arrive (cumulative, like the real thing)."""

    def __init__(self, model: str = MODEL) -> None:
        self.model = model
        self.metrics = ServingMetrics()
        self.bound: dict[str, Any] = {}

    def serve(
        self, version: str, ok: int, invalid: int = 0, error: int = 0, seconds: float = 0.01, value: float = 5000.0
    ) -> Traffic:
        b = self.bound.setdefault(version, self.metrics.bind(self.model, version))
        for outcome, n in (("ok", ok), ("invalid", invalid), ("error", error)):
            for _ in range(n):
                b.observe_request(outcome, seconds)
        if ok:
            b.observe_predictions(np.full(ok * 3, value))
        return self

    def text(self) -> str:
        return generate_latest(self.metrics.registry).decode()

    def snapshot(self) -> MetricsSnapshot:
        return parse_exposition(self.text(), self.model, "test")


def release(**gates: Any) -> Any:
    g = {"max_error_rate": 0.01, "max_p95_latency_ms": 250, "max_mean_relative_divergence": 0.15, "min_requests": 200}
    return parse_release({"model": MODEL, "version": 2, "gates": g | gates})


def canary_state(percent: int, version: str = "2", previous: str = "1") -> GitState:
    doc = {
        "kind": "InferenceService",
        "metadata": {"annotations": {"sluice.dev/version": version, "sluice.dev/previous-version": previous}},
        "spec": {"predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": "s3://b/k"}}},
    }
    return GitState(MODEL, doc)


# --- pure: parsing and gate arithmetic ----------------------------------------------------------


def test_parse_exposition_reads_per_version_counters() -> None:
    t = Traffic().serve("1", ok=90, invalid=5, error=5, seconds=0.004, value=4000).serve("2", ok=10, value=6000)
    t.serve("1", ok=0)  # binding twice must not duplicate series
    snap = t.snapshot()
    v1, v2 = snap.get("1"), snap.get("2")
    assert (v1.total, v1.failed, v1.error_rate) == (100, 10, 0.1)
    assert v1.mean_prediction == pytest.approx(4000) and v2.mean_prediction == pytest.approx(6000)
    assert v1.latency_buckets[-1] == (math.inf, 100)
    assert 0.0025 < (v1.latency_quantile(0.95) or 0) <= 0.005
    assert snap.get("9").total == 0  # unknown version: empty, not an error
    other = parse_exposition(t.text(), "other-model")
    assert other.versions == {}


def test_histogram_quantile_like_prometheus() -> None:
    buckets = ((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.95, ((0.1, 10.0), (math.inf, 100.0))) == math.inf
    assert histogram_quantile(0.95, ((0.1, 0.0), (math.inf, 0.0))) is None


def test_deltas_and_counter_resets() -> None:
    t = Traffic().serve("2", ok=100)
    first = t.snapshot()
    t.serve("2", ok=50, error=5)
    delta = t.snapshot().get("2").since(first.get("2"))
    assert (delta.total, delta.failed) == (55, 5)
    # A restarted process starts from zero: the "delta" would be negative, so the current values count.
    restarted = Traffic().serve("2", ok=20).snapshot().get("2")
    assert restarted.since(first.get("2")).total == 20
    # The snapshot survives the trip through a commit trailer.
    back = MetricsSnapshot.from_trailer(first.to_trailer())
    assert back is not None and back.get("2") == first.get("2")


@pytest.mark.parametrize(
    ("traffic", "gates", "action", "reason"),
    [
        (lambda t: t.serve("2", ok=150).serve("1", ok=1000), {}, "hold", "150 of 200 canary requests"),
        (lambda t: t.serve("2", ok=300).serve("1", ok=1000, value=5100), {}, "advance", "gates pass"),
        (lambda t: t.serve("2", ok=290, error=10).serve("1", ok=1000), {}, "rollback", "error rate 3.33% > 1.00%"),
        (lambda t: t.serve("2", ok=290, invalid=10).serve("1", ok=1000), {}, "rollback", "error rate"),
        (lambda t: t.serve("2", ok=300, seconds=0.4).serve("1", ok=1000), {}, "rollback", "p95 latency"),
        (lambda t: t.serve("2", ok=300, value=9000).serve("1", ok=1000), {}, "rollback", "diverges"),
        (lambda t: t.serve("2", ok=300, value=0).serve("1", ok=1000), {}, "rollback", "diverges 100.0%"),
        (lambda t: t.serve("2", ok=300), {}, "hold", "no predictions from both versions"),
        (lambda t: t.serve("2", ok=300, error=1).serve("1", ok=10), {"max_error_rate": 0.05}, "advance", "gates"),
    ],
    ids=["few-requests", "pass", "errors", "invalid", "latency", "divergence", "constant-zero", "no-stable", "tol"],
)
def test_decide_at_a_canary_step(traffic: Any, gates: dict[str, Any], action: str, reason: str) -> None:
    d = decide(canary_state(10), release(**gates), traffic(Traffic()).snapshot(), None)
    assert d.action == action and reason in d.reason, d
    assert d.to_percent == {"hold": 10, "advance": 50, "rollback": 0}[action]


def test_decide_finalizes_at_the_last_step_and_restores_after_a_rollback() -> None:
    snap = Traffic().serve("2", ok=300).snapshot()  # at 100% the stable version gets nothing
    d = decide(canary_state(100), release(), snap, None)
    assert (d.action, d.to_percent) == ("finalize", None) and "not checked at 100%" in d.reason
    assert decide(canary_state(0), release(), None, None).action == "restore"
    assert decide(GitState(MODEL, None), release(), None, None).action == "none"
    assert next_step([10, 50, 100], 10) == 50 and next_step([10, 50, 100], 30) == 50
    assert next_step([10, 50, 100], 100) is None


def test_the_window_starts_at_the_last_decision() -> None:
    t = Traffic().serve("2", ok=400).serve("1", ok=2000)
    at_advance = t.snapshot()
    t.serve("2", ok=100).serve("1", ok=500)
    d = decide(canary_state(50), release(), t.snapshot(), at_advance)
    assert d.action == "hold" and "100 of 200" in d.reason


def test_read_metrics_from_a_runtime_url_and_prometheus_api() -> None:
    t = Traffic().serve("1", ok=10).serve("2", ok=3, error=1)
    prom = {
        'sum by (version, outcome) (sluice_inference_requests_total{model="rossmann"})': [
            ({"version": "2", "outcome": "ok"}, 30),
            ({"version": "2", "outcome": "error"}, 2),
        ],
        'sum by (version, le) (sluice_inference_duration_seconds_bucket{model="rossmann"})': [
            ({"version": "2", "le": "0.1"}, 30),
            ({"version": "2", "le": "+Inf"}, 32),
        ],
        'sum by (version) (sluice_prediction_value_sum{model="rossmann"})': [({"version": "2"}, 900)],
        'sum by (version) (sluice_prediction_value_count{model="rossmann"})': [({"version": "2"}, 90)],
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            import json
            import urllib.parse

            url = urllib.parse.urlparse(self.path)
            if url.path == "/metrics":
                body, ctype = t.text().encode(), "text/plain"
            else:
                q = urllib.parse.parse_qs(url.query)["query"][0]
                result = [{"metric": m, "value": [0, str(v)]} for m, v in prom[q]]
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
                ctype = "application/json"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        runtime = read_metrics(MODEL, f"{base}/metrics")
        assert runtime.get("2").failed == 1 and runtime.get("1").total == 10
        promql = read_metrics(MODEL, None, env={"PROMETHEUS_URL": base})
        v2 = promql.get("2")
        assert (v2.total, v2.failed, v2.mean_prediction) == (32, 2, 10)
        assert v2.latency_buckets == ((0.1, 30), (math.inf, 32))
    finally:
        server.shutdown()
    with pytest.raises(Exception, match="no metrics source"):
        read_metrics(MODEL, None, env={})


# --- the whole rollout, committed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowRegistry]:
    """A real MLflow registry (sqlite) with versions 1..3 whose sources are s3:// URIs."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for v in (1, 2, 3):
        client.create_model_version(MODEL, source=f"s3://sluice-models/1/models/m-{v}/artifacts", run_id=None)
    yield MlflowRegistry(uri, client)


def present(uri: str) -> ArtifactReport:
    """Artifacts of the registered s3:// sources: test_promote checks real S3; here they exist."""
    return ArtifactReport(True, MLMODEL, "ok")


def gate_fails(*args: Any) -> tuple[bool, str]:
    return False, "candidate RMSPE 0.9 > baseline RMSPE 0.1 x (1 + 0.02)"


def last(repos: Repos) -> gitrepo.LogEntry:
    return gitrepo.sluice_log(repos.work, MODEL, max_count=1)[0]


def manifest(repos: Repos) -> dict[str, Any]:
    doc = yaml.safe_load(repos.manifest.read_text())
    assert isinstance(doc, dict)
    return doc


def test_rollout_story(tmp_path: Path, registry: MlflowRegistry) -> None:
    """v1 straight to 100%; v2 canary 10 -> 50 -> 100 -> finalize; forced bad v3 rolled back in two phases."""
    repos = make_repos(tmp_path, MODEL)
    kw: dict[str, Any] = {"gate": gate_fails, "artifacts": present, "push": True}

    out = promote(repos.work, registry, MODEL, "1", **kw)
    assert out.action == "promote" and "first release" in out.message
    assert "canaryTrafficPercent" not in manifest(repos)["spec"]["predictor"]
    assert registry.aliases(MODEL) == {"champion": "1"}

    assert promote(repos.work, registry, MODEL, "1", **kw).action == "noop"
    # The gate fails (v2 vs champion v1): refused, nothing changed.
    head = repos.head()
    out = promote(repos.work, registry, MODEL, "2", **kw)
    assert out.action == "refused" and "fails the evaluation gate against v1" in out.message
    assert repos.head() == head and repos.status() == ""
    out = promote(repos.work, registry, MODEL, "2", **(kw | {"gate": lambda *a: (True, "RMSPE ok")}))
    assert out.action == "promote" and out.exit_code == 0, out.render()
    v2_at_10 = manifest(repos)
    assert v2_at_10["spec"]["predictor"]["canaryTrafficPercent"] == 10
    expected = {"Action": "promote", "Version": "2", "Step": "10", "Previous-Version": "1"}
    assert last(repos).trailers.items() >= expected.items()
    assert promote(repos.work, registry, MODEL, "3", **kw).message.startswith("a rollout is in progress")

    t = Traffic()
    run = lambda: step(repos.work, registry, MODEL, t.snapshot, push=True)  # noqa: E731

    t.serve("2", ok=50).serve("1", ok=400)
    out = run()
    assert out.action == "hold" and out.commit and last(repos).get("Action") == "hold"
    held = repos.head()
    out = run()  # the same hold again: printed, not committed a second time
    assert out.action == "hold" and out.commit is None and repos.head() == held

    t.serve("2", ok=200).serve("1", ok=1800)
    out = run()
    assert out.action == "advance" and manifest(repos)["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert last(repos).get("Metrics")  # the baseline of the next window

    t.serve("2", ok=150).serve("1", ok=150)  # cumulative 400 canary requests, but only 150 since the advance
    assert run().action == "hold"
    t.serve("2", ok=100).serve("1", ok=100)
    assert run().action == "advance" and manifest(repos)["spec"]["predictor"]["canaryTrafficPercent"] == 100
    t.serve("2", ok=300)
    out = run()
    assert out.action == "finalize", out.render()
    final = manifest(repos)
    assert "canaryTrafficPercent" not in final["spec"]["predictor"]
    # Only canaryTrafficPercent changed between the steps of v2.
    v2_at_10["spec"]["predictor"].pop("canaryTrafficPercent")
    assert final == v2_at_10
    assert registry.aliases(MODEL) == {"champion": "2", "previous": "1"}
    assert run().action == "noop"
    finalized_text = repos.manifest.read_text()

    # A bad v3, forced past the gate: the reason is recorded.
    out = promote(repos.work, registry, MODEL, "3", **(kw | {"force": True, "reason": "hotfix for ticket 42"}))
    assert out.action == "promote", out.render()
    assert manifest(repos)["metadata"]["annotations"]["sluice.dev/forced-reason"] == "hotfix for ticket 42"
    assert last(repos).get("Forced") == "yes" and "hotfix for ticket 42" in last(repos).get("Reason")
    t.serve("3", ok=200, value=0).serve("2", ok=2000)  # constant predictions
    out = run()
    assert out.action == "rollback" and "diverges" in out.message
    assert manifest(repos)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert manifest(repos)["spec"]["predictor"]["model"]["storageUri"].endswith("m-3/artifacts")  # spec kept
    out = run()
    assert out.action == "rollback" and "restored v2" in out.message
    assert repos.manifest.read_text() == finalized_text  # byte-identical to v2's finalized manifest
    assert registry.aliases(MODEL) == {"champion": "2", "previous": "1"}
    v3 = registry.get_version(MODEL, "3")
    assert v3 is not None and "diverges" in v3.tags["sluice.rolled_back"]
    assert repos.remote_head() == repos.head() and repos.status() == ""

    actions = [(e.get("Action"), e.get("Version"), e.get("Step")) for e in history(repos.work, MODEL)]
    assert actions[::-1] == [
        ("promote", "1", "100"),
        ("promote", "2", "10"),
        ("hold", "2", "10"),
        ("advance", "2", "50"),
        ("hold", "2", "50"),
        ("advance", "2", "100"),
        ("finalize", "2", "100"),
        ("promote", "3", "10"),
        ("rollback", "3", "0"),
        ("rollback", "2", "100"),
    ]
    table = format_history(history(repos.work, MODEL))
    assert table.splitlines()[0].split() == ["date", "action", "version", "step", "reason", "commit"]
    assert "hotfix for ticket 42" in table
    assert "v2 serves 100%" in status(repos.work, MODEL)


def test_step_refuses_a_dirty_tree_and_reports_unreadable_metrics(tmp_path: Path, registry: MlflowRegistry) -> None:
    repos = make_repos(tmp_path, MODEL)
    kw: dict[str, Any] = {"gate": lambda *a: (True, "ok"), "artifacts": present}
    assert promote(repos.work, registry, MODEL, "1", **kw).action == "promote"
    # champion is now 1 in this module's registry, so v2 goes to a canary
    assert promote(repos.work, registry, MODEL, "2", **kw).action == "promote"
    head = repos.head()

    def broken() -> MetricsSnapshot:
        from pipelines.metrics_source import MetricsError

        raise MetricsError("cannot read metrics from http://nowhere/metrics: refused")

    out = step(repos.work, registry, MODEL, broken)
    assert out.action == "error" and "no decision taken" in out.message and repos.head() == head
    (repos.folder / "release.yaml").write_text((repos.folder / "release.yaml").read_text() + "\n# edit\n")
    out = step(repos.work, registry, MODEL, Traffic().snapshot())
    assert out.action == "refused" and "uncommitted changes" in out.message and repos.head() == head


def test_push_rebases_onto_a_moved_remote_or_resets(tmp_path: Path) -> None:
    repos = make_repos(tmp_path, MODEL)
    other = repos.other_clone(tmp_path / "other")
    (other / "NOTES.md").write_text("unrelated\n")
    git(other, "add", "NOTES.md")
    git(other, "commit", "--quiet", "-m", "someone else")
    git(other, "push", "--quiet")

    before = repos.head()
    (repos.work / "a.txt").write_text("ours\n")
    gitrepo.commit(repos.work, ["a.txt"], "ours", "", {"Model": MODEL, "Action": "hold"})
    result = gitrepo.push(repos.work, before)
    assert result.rebased and repos.remote_head() == repos.head()
    assert (repos.work / "NOTES.md").exists()

    # Now a conflicting change on the remote: the push fails, nothing is lost anywhere.
    git(other, "pull", "--quiet", "--rebase")
    (other / "a.txt").write_text("theirs\n")
    git(other, "commit", "--quiet", "-am", "theirs")
    git(other, "push", "--quiet")
    remote_before = repos.remote_head()
    before = repos.head()
    (repos.work / "a.txt").write_text("ours again\n")
    gitrepo.commit(repos.work, ["a.txt"], "ours again", "", {"Model": MODEL, "Action": "hold"})
    with pytest.raises(gitrepo.PushRejected, match=r"conflict in a\.txt"):
        gitrepo.push(repos.work, before)
    assert repos.head() == before and repos.remote_head() == remote_before and repos.status() == ""
