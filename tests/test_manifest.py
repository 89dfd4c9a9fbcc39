"""The release file (schema, errors naming the field, write-back) and the InferenceService rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_models import validate_kserve
from yamllint import linter
from yamllint.config import YamlLintConfig

from pipelines.gitops.manifest import (
    DEPLOYMENT_MODE,
    HEADER,
    NAMESPACE,
    RUNTIME,
    SERVICE_ACCOUNT,
    ResolvedVersion,
    canary_percent,
    dump_manifest,
    read_manifest,
    render_inference_service,
    revision_digest,
    set_traffic,
    write_manifest,
)
from pipelines.gitops.release import Release, ReleaseError, load_release, parse_release, write_back_version

ROOT = Path(__file__).resolve().parent.parent
GATES = {
    "max_error_rate": 0.01,
    "max_p95_latency_ms": 250,
    "max_mean_relative_divergence": 0.15,
    "min_requests": 200,
}
V1 = ResolvedVersion("rossmann", "1", "run1", "s3://sluice-models/1/models/m-aaa/artifacts", ("previous",))
V2 = ResolvedVersion("rossmann", "2", "run2", "s3://sluice-models/1/models/m-bbb/artifacts", ("champion",))


def release(**overrides: Any) -> Release:
    return parse_release({"model": "rossmann", "version": 2, "gates": GATES, **overrides})


def test_committed_release_file_loads_and_names_nothing_yet() -> None:
    """The project's own release file is the seed of the GitOps remote: nothing is released until a
    person names a version and pushes."""
    rel = load_release(ROOT / "gitops/models/rossmann/release.yaml")
    assert rel.model == "rossmann"
    assert rel.rollout.steps == [10, 50, 100]
    assert not rel.released and rel.ref == "" and rel.requested == "nothing"


@pytest.mark.parametrize("canary", [None, 0, 10, 50, 100])
def test_render_is_a_valid_kserve_inference_service(canary: int | None) -> None:
    doc = render_inference_service(release(), V2, canary)
    isvc = validate_kserve(doc)  # strict: unknown fields fail, required fields checked
    predictor = isvc.spec.predictor
    assert predictor.canary_traffic_percent == canary
    assert predictor.model.storage_uri == V2.storage_uri
    assert predictor.model.runtime == RUNTIME
    assert predictor.model.model_format.name == "mlflow"
    assert predictor.model.protocol_version == "v2"
    assert predictor.service_account_name == SERVICE_ACCOUNT
    assert predictor.model.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert isvc.metadata.namespace == NAMESPACE
    ann = isvc.metadata.annotations
    assert ann["serving.kserve.io/deploymentMode"] == DEPLOYMENT_MODE == "Knative"
    assert ann["sluice.dev/model"] == "rossmann"
    assert ann["sluice.dev/version"] == "2"
    assert ann["sluice.dev/run-id"] == "run2"
    assert ann["sluice.dev/release"] == "rossmann-v2"
    assert isvc.metadata.labels["sluice.dev/version"] == "2"


def test_canary_field_is_absent_when_none() -> None:
    assert "canaryTrafficPercent" not in render_inference_service(release(), V2, None)["spec"]["predictor"]
    assert render_inference_service(release(), V2, 0)["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_rollout_steps_change_only_the_traffic_split() -> None:
    """Anything else differing would start a new Knative revision and restart the canary."""
    docs = [render_inference_service(release(), V2, c) for c in (10, 50, None)]
    assert len({revision_digest(d) for d in docs}) == 1
    assert [canary_percent(d) for d in docs] == [10, 50, None]
    assert set_traffic(docs[0], None) == docs[2]
    assert canary_percent(docs[0]) == 10  # set_traffic copies, never edits in place


def test_a_new_revision_for_any_other_change() -> None:
    base = revision_digest(render_inference_service(release(), V2, None))
    assert revision_digest(render_inference_service(release(), V1, None)) != base
    bigger = release(resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
    assert revision_digest(render_inference_service(bigger, V2, None)) != base
    assert revision_digest(render_inference_service(release(min_replicas=2), V2, None)) != base


def test_render_is_deterministic_and_rewriting_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "rossmann" / "inferenceservice.yaml"
    doc = render_inference_service(release(), V2, 10)
    assert write_manifest(path, doc) is True
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    # Same inputs, built again (dict insertion order must not matter): identical bytes, no write.
    again = render_inference_service(release(), V2, 10)
    assert write_manifest(path, dict(reversed(list(again.items())))) is False
    assert path.read_bytes() == first and path.stat().st_mtime_ns == mtime
    assert dump_manifest(doc) == dump_manifest(again)
    assert first.decode().startswith(HEADER)
    assert read_manifest(path) == doc
    assert write_manifest(path, render_inference_service(release(), V2, 50)) is True
    assert read_manifest(path)["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert not list(tmp_path.rglob("*.tmp"))


def test_written_manifest_is_lint_clean_and_argocd_loadable(tmp_path: Path) -> None:
    path = tmp_path / "inferenceservice.yaml"
    write_manifest(path, render_inference_service(release(), V2, 10))
    text = path.read_text()
    conf = YamlLintConfig("extends: default\nrules:\n  line-length: {max: 120}\n")
    assert [str(p) for p in linter.run(text, conf)] == []
    (doc,) = list(yaml.safe_load_all(text))
    validate_kserve(doc)


def test_read_manifest_rejects_other_objects(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(ValueError, match="not an InferenceService"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolved": ResolvedVersion("other", "2", "r", "s3://b/p")}, "model 'other'"),
        ({"resolved": ResolvedVersion("rossmann", "2", "r", "mlflow-artifacts:/x")}, "must be an s3:// URI"),
        ({"resolved": ResolvedVersion("rossmann", "2", "r", "models:/m-abc")}, "must be an s3:// URI"),
        ({"canary_percent": 101}, "0..100"),
        ({"canary_percent": -1}, "0..100"),
        ({"canary_percent": True}, "0..100"),
    ],
)
def test_render_refuses_bad_inputs(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"release": release(), "resolved": V2, "canary_percent": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        render_inference_service(**args)


# --- release file validation: every mistake gets a message naming the field ----------------------

INVALID_RELEASES = {
    "steps not increasing": (
        {"rollout": {"steps": [10, 10, 100]}},
        "rollout.steps: must be strictly increasing",
    ),
    "steps decreasing": ({"rollout": {"steps": [50, 10, 100]}}, "strictly increasing"),
    "steps not ending at 100": ({"rollout": {"steps": [10, 50]}}, "rollout.steps: must end at 100"),
    "step above 100": ({"rollout": {"steps": [10, 150]}}, "1..100, got [150]"),
    "step of zero": ({"rollout": {"steps": [0, 100]}}, "1..100, got [0]"),
    "no steps": ({"rollout": {"steps": []}}, "at least one step"),
    "version and alias": ({"alias": "champion"}, "set one of 'version' or 'alias', not both"),
    "version not a number": ({"version": "two"}, "version: must be a positive integer"),
    "version zero": ({"version": 0}, "positive integer"),
    "reserved alias": ({"version": None, "alias": "latest"}, "alias: not a usable MLflow alias"),
    "model name not a DNS label": ({"model": "Rossmann_Sales"}, "model: must be a lowercase DNS label"),
    "misspelt top-level key": ({"rollot": {"steps": [100]}}, "rollot: unknown field (misspelt?)"),
    "misspelt gate": (
        {"gates": {**GATES, "max_p95_latecy_ms": 1}},
        "gates.max_p95_latecy_ms: unknown field",
    ),
    "missing gate": (
        {"gates": {k: v for k, v in GATES.items() if k != "min_requests"}},
        "gates.min_requests: Field required",
    ),
    "error rate above 1": ({"gates": {**GATES, "max_error_rate": 5}}, "gates.max_error_rate"),
    "bad quantity": (
        {"resources": {"requests": {"cpu": "lots", "memory": "1Gi"}}},
        "resources.requests.cpu: not a Kubernetes quantity",
    ),
    "scale to zero": ({"min_replicas": 0}, "min_replicas: Input should be greater than or equal to 1"),
    "min above max replicas": (
        {"min_replicas": 5, "max_replicas": 2},
        "min_replicas (5) exceeds max_replicas (2)",
    ),
    "more workers than cores": (
        {"workers": 2},
        "workers (2) exceed the CPU limit (1): each worker uses about one core; raise resources.limits.cpu to 2",
    ),
    "no workers": ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
}


@pytest.mark.parametrize(("overrides", "message"), INVALID_RELEASES.values(), ids=INVALID_RELEASES.keys())
def test_invalid_release_files_fail_clearly(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    data = {"model": "rossmann", "version": 2, "gates": GATES} | overrides
    path = tmp_path / "rossmann" / "release.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ReleaseError) as err:
        load_release(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_release_file_errors_for_the_file_itself(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="no such release file"):
        load_release(tmp_path / "rossmann" / "release.yaml")
    bad = tmp_path / "rossmann" / "release.yaml"
    bad.parent.mkdir()
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ReleaseError, match="not valid YAML"):
        load_release(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ReleaseError, match="expected a mapping"):
        load_release(bad)
    wrong_folder = tmp_path / "other" / "release.yaml"
    wrong_folder.parent.mkdir()
    wrong_folder.write_text(yaml.safe_dump({"model": "rossmann", "version": 2, "gates": GATES}))
    with pytest.raises(ReleaseError, match="does not match its folder 'other'"):
        load_release(wrong_folder)


def test_workers_reach_the_runtime_as_env_and_make_a_new_revision() -> None:
    two_cores = {"requests": {"cpu": "2", "memory": "768Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    one = render_inference_service(release(resources=two_cores), V2, None)
    two = render_inference_service(release(resources=two_cores, workers=2), V2, None)
    env = {e["name"]: e["value"] for e in two["spec"]["predictor"]["model"]["env"]}
    assert env == {"SLUICE_MODEL_VERSION": "2", "SLUICE_WORKERS": "2"}
    assert [e["name"] for e in one["spec"]["predictor"]["model"]["env"]] == ["SLUICE_MODEL_VERSION"]
    assert revision_digest(one) != revision_digest(two)  # a new revision rolls the change out
    assert release(resources={**two_cores, "limits": {"cpu": "1500m", "memory": "1Gi"}}, workers=2).workers == 2


def test_release_defaults_and_alias() -> None:
    rel = parse_release({"model": "rossmann", "alias": "champion", "gates": GATES})
    assert rel.version is None and rel.ref == "champion" and rel.requested == "alias champion"
    assert rel.rollout.steps == [10, 50, 100]
    assert (rel.resources.requests.cpu, rel.resources.limits.memory) == ("500m", "1Gi")
    assert release().version == "2"  # YAML ints become MLflow's string versions


def test_nothing_released_is_a_valid_release_file() -> None:
    rel = parse_release({"model": "rossmann", "gates": GATES})
    assert not rel.released and rel.requested == "nothing"


SEED = (ROOT / "gitops/models/rossmann/release.yaml").read_text()


def test_write_back_replaces_only_the_version_and_keeps_comments() -> None:
    text = SEED.replace("# version: 1", "version: 3  # the retrain")
    out = write_back_version(text, "2", "v3 rolled back: divergence 54% > 15%", "gitops/models/rossmann/release.yaml")
    assert "version: 2  # written back by sluice CI: v3 rolled back: divergence 54% > 15%" in out
    others = [ln for ln in out.splitlines() if not ln.startswith("version:")]
    assert others == [ln for ln in text.splitlines() if not ln.startswith("version:")]
    assert parse_release(yaml.safe_load(out)).version == "2"
    assert "# Canary traffic share" in out  # every comment kept


def test_write_back_of_an_alias_or_nothing() -> None:
    alias = SEED.replace("# version: 1", "alias: champion")
    assert parse_release(yaml.safe_load(write_back_version(alias, "4", "why"))).version == "4"
    assert parse_release(yaml.safe_load(write_back_version(SEED, "4", "why"))).version == "4"
    with pytest.raises(ReleaseError):
        write_back_version("model: rossmann\nversion: [\n", "4", "why")
