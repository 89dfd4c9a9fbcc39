"""Run the ArgoCD health Lua for real (lupa, Lua 5.1 like ArgoCD's gopher-lua) on status fixtures.

ArgoCD's convention: the live object is the global `obj`; the script returns a table with
`status` (Healthy / Progressing / Degraded / Suspended / Missing / Unknown) and `message`.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parent.parent
ISVC_LUA = ROOT / "argocd/health/inferenceservice.lua"
APP_LUA = ROOT / "argocd/health/application.lua"
ARGOCD_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_health(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    status, message = result["status"], result["message"]
    assert status in ARGOCD_STATUSES
    assert isinstance(message, str)
    return status, message


def cond(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    c = {"type": type_, "status": status, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


ALL_TRUE = [
    cond(t, "True")
    for t in ("IngressReady", "PredictorConfigurationReady", "PredictorReady", "PredictorRouteReady", "Ready")
]


def isvc(
    conditions: list[dict[str, Any]] | None,
    predictor: dict[str, Any] | None = None,
    canary: int | None = None,
    generation: int = 2,
    observed: int | None = 2,
    **status: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"modelFormat": {"name": "mlflow"}, "storageUri": "s3://b/m"}}
    if canary is not None:
        spec["canaryTrafficPercent"] = canary
    obj: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "rossmann", "namespace": "sluice-serving", "generation": generation},
        "spec": {"predictor": spec},
    }
    if conditions is not None:
        obj["status"] = {"conditions": conditions, **status}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
        if predictor is not None:
            obj["status"]["components"] = {"predictor": predictor}
    return obj


def rolled_out(rev: str = "rossmann-predictor-00001") -> dict[str, Any]:
    return {
        "latestCreatedRevision": rev,
        "latestReadyRevision": rev,
        "latestRolledoutRevision": rev,
        "traffic": [{"latestRevision": True, "percent": 100, "revisionName": rev}],
    }


def canary_split(percent: int) -> dict[str, Any]:
    return {
        "latestCreatedRevision": "rossmann-predictor-00002",
        "latestReadyRevision": "rossmann-predictor-00002",
        "latestRolledoutRevision": "rossmann-predictor-00001",
        "previousRolledoutRevision": "rossmann-predictor-00001",
        "traffic": [
            {
                "latestRevision": True,
                "percent": percent,
                "revisionName": "rossmann-predictor-00002",
                "tag": "latest",
            },
            {
                "latestRevision": False,
                "percent": 100 - percent,
                "revisionName": "rossmann-predictor-00001",
                "tag": "prev",
            },
        ],
    }


FAILED_MSG = 'Revision "rossmann-predictor-00002" failed with message: Container failed with: exit 1.'

CASES = {
    "healthy: ready, one revision with all traffic": (
        isvc(ALL_TRUE, rolled_out()),
        "Healthy",
        "rossmann-predictor-00001 serves all traffic",
    ),
    "healthy: first release, canary field set but nothing to split": (
        isvc(ALL_TRUE, rolled_out(), canary=10),
        "Healthy",
        "serves all traffic",
    ),
    "healthy: finalized after a canary": (
        isvc(ALL_TRUE, {**rolled_out("rossmann-predictor-00002"), "previousRolledoutRevision": "x"}),
        "Healthy",
        "00002",
    ),
    "progressing: canary holds 10%": (
        isvc(ALL_TRUE, canary_split(10), canary=10),
        "Progressing",
        "10% of traffic",
    ),
    "progressing: canary holds 50%": (
        isvc(ALL_TRUE, canary_split(50), canary=50),
        "Progressing",
        "previous revision 50%",
    ),
    "progressing: rolled back to 0%": (
        isvc(ALL_TRUE, canary_split(0), canary=0),
        "Progressing",
        "receives 0%",
    ),
    "progressing: canary set, traffic not reported yet": (
        isvc(ALL_TRUE, {k: v for k, v in canary_split(10).items() if k != "traffic"}, canary=10),
        "Progressing",
        "is not rolled out",
    ),
    "degraded: canary revision failed (KServe keeps traffic on the old one)": (
        isvc(
            [
                cond("IngressReady", "True"),
                cond("PredictorConfigurationReady", "False", "RevisionFailed", FAILED_MSG),
                cond("PredictorReady", "False", "RevisionFailed", FAILED_MSG),
                cond("PredictorRouteReady", "True"),
                cond("Ready", "False", "RevisionFailed", FAILED_MSG),
            ],
            {
                **canary_split(10),
                "latestReadyRevision": "rossmann-predictor-00001",
                "traffic": rolled_out()["traffic"],
            },
            canary=10,
        ),
        "Degraded",
        "RevisionFailed",
    ),
    "degraded: new revision failed without a reason on Ready": (
        isvc(
            [
                *ALL_TRUE[:1],
                cond("PredictorConfigurationReady", "False", "ContainerUnhealthy", "probe failed"),
            ],
            {**rolled_out(), "latestCreatedRevision": "rossmann-predictor-00002"},
        ),
        "Degraded",
        "Revision rossmann-predictor-00002 failed",
    ),
    "degraded: model failed to load": (
        isvc(
            [cond("Ready", "False", "ModelLoadFailed")],
            rolled_out(),
            modelStatus={
                "transitionStatus": "BlockedByFailedLoad",
                "lastFailureInfo": {"message": "no MLmodel"},
            },
        ),
        "Degraded",
        "BlockedByFailedLoad: no MLmodel",
    ),
    "progressing: not ready yet": (
        isvc(
            [
                cond("IngressReady", "False", "IngressNotConfigured"),
                cond("PredictorReady", "Unknown"),
                cond("Ready", "Unknown"),
            ],
            {"latestCreatedRevision": "rossmann-predictor-00001"},
        ),
        "Progressing",
        "IngressReady is False (IngressNotConfigured)",
    ),
    "progressing: new revision still starting": (
        isvc(ALL_TRUE, {**rolled_out(), "latestCreatedRevision": "rossmann-predictor-00002"}),
        "Progressing",
        "Waiting for revision rossmann-predictor-00002",
    ),
    "progressing: controller has not observed the new spec": (
        isvc(ALL_TRUE, rolled_out(), generation=3, observed=2),
        "Progressing",
        "observe generation 3",
    ),
    "progressing: no status at all": (isvc(None), "Progressing", "Waiting for the KServe controller"),
    "progressing: status without conditions": (
        {**isvc(None), "status": {"url": "http://x"}},
        "Progressing",
        "Waiting for the KServe controller",
    ),
}


@pytest.mark.parametrize(("obj", "expected", "fragment"), CASES.values(), ids=CASES.keys())
def test_inferenceservice_health(obj: dict[str, Any], expected: str, fragment: str) -> None:
    status, message = run_health(ISVC_LUA, obj)
    assert status == expected, message
    assert fragment in message


def test_stopped_service_is_suspended() -> None:
    obj = isvc(ALL_TRUE, rolled_out())
    obj["metadata"]["annotations"] = {"serving.kserve.io/stop": "true"}
    assert run_health(ISVC_LUA, obj)[0] == "Suspended"


def test_deleting_service_is_progressing() -> None:
    obj = isvc(ALL_TRUE, rolled_out())
    obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert run_health(ISVC_LUA, obj) == ("Progressing", "InferenceService is being deleted")


def test_health_ignores_unrelated_fields_and_does_not_mutate_obj() -> None:
    obj = isvc(ALL_TRUE, rolled_out(), url="http://rossmann.sluice-serving.example.com")
    before = copy.deepcopy(obj)
    assert run_health(ISVC_LUA, obj)[0] == "Healthy"
    assert obj == before


@pytest.mark.parametrize(
    ("app_status", "expected"),
    [
        (None, ("Progressing", "")),
        ({"health": {"status": "Healthy"}}, ("Healthy", "")),
        ({"health": {"status": "Degraded", "message": "isvc failed"}}, ("Degraded", "isvc failed")),
    ],
)
def test_application_health(app_status: dict[str, Any] | None, expected: tuple[str, str]) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "x"},
    }
    if app_status is not None:
        obj["status"] = app_status
    assert run_health(APP_LUA, obj) == expected


# ---- the stop annotation and malformed conditions ----------------------------------------------
@pytest.mark.parametrize("value", ["true", "True", "TRUE", "tRuE"])
def test_stop_annotation_is_read_ignoring_case_as_kserve_does(value: str) -> None:
    # KServe: strings.EqualFold(val, "true") (pkg/utils GetForceStopRuntime).
    obj = isvc(ALL_TRUE, rolled_out())
    obj["metadata"]["annotations"] = {"serving.kserve.io/stop": value}
    assert run_health(ISVC_LUA, obj)[0] == "Suspended"


@pytest.mark.parametrize("value", ["false", "False", "", "yes", "1", " true"])
def test_other_stop_annotation_values_do_not_stop(value: str) -> None:
    obj = isvc(ALL_TRUE, rolled_out())
    obj["metadata"]["annotations"] = {"serving.kserve.io/stop": value}
    assert run_health(ISVC_LUA, obj)[0] == "Healthy"


def test_condition_without_type_is_reported_not_raised() -> None:
    untyped = {"status": "False", "reason": "Mystery", "message": "no type here"}
    obj = isvc([untyped, cond("Ready", "Unknown")], {"latestCreatedRevision": "rossmann-predictor-00001"})
    status, message = run_health(ISVC_LUA, obj)
    assert status == "Progressing"
    assert "nil is False (Mystery): no type here" in message


def test_condition_without_type_beside_healthy_ones() -> None:
    obj = isvc([*ALL_TRUE, {"status": "True"}], rolled_out())
    assert run_health(ISVC_LUA, obj)[0] == "Healthy"


# ---- Argo CD's own fixtures (vendored, see tests/fixtures/argocd_inferenceservice/README.md) ----
UPSTREAM = ROOT / "tests/fixtures/argocd_inferenceservice"
UPSTREAM_CASES = yaml.safe_load((UPSTREAM / "health_test.yaml").read_text())["tests"]


def test_all_upstream_fixtures_are_vendored_and_listed() -> None:
    listed = sorted(Path(case["inputPath"]).name for case in UPSTREAM_CASES)
    assert listed == sorted(p.name for p in (UPSTREAM / "testdata").glob("*.yaml"))
    assert len(listed) == 12


@pytest.mark.parametrize("case", UPSTREAM_CASES, ids=lambda c: Path(c["inputPath"]).stem)
def test_agrees_with_argocd_on_its_own_fixtures(case: dict[str, Any]) -> None:
    """Same status as Argo CD's bundled check; the messages are Sluice's own."""
    obj = yaml.safe_load((UPSTREAM / case["inputPath"]).read_text())
    status, _ = run_health(ISVC_LUA, obj)
    assert status == case["healthStatus"]["status"]


# ---- argocd/argocd-cm-patch.yaml is generated from the Lua files ---------------------------------
def _cm_patch_module() -> Any:
    spec = importlib.util.spec_from_file_location("cm_patch", ROOT / "argocd/cm_patch.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_patch_is_generated_from_the_lua_files() -> None:
    cm_patch = _cm_patch_module()
    text = (ROOT / "argocd/argocd-cm-patch.yaml").read_text()
    assert text == cm_patch.render(), "argocd/argocd-cm-patch.yaml is stale: run python argocd/cm_patch.py"
    patch = yaml.safe_load(text)
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    data = patch["data"]
    assert data["resource.customizations.health.serving.kserve.io_InferenceService"] == ISVC_LUA.read_text()
    assert data["resource.customizations.health.argoproj.io_Application"] == APP_LUA.read_text()
    assert cm_patch.main(["--check"]) == 0


def test_a_changed_lua_file_makes_the_patch_stale(tmp_path: Path) -> None:
    cm_patch = _cm_patch_module()
    health = tmp_path / "health"
    shutil.copytree(ROOT / "argocd/health", health)
    patch = tmp_path / "argocd-cm-patch.yaml"
    patch.write_text((ROOT / "argocd/argocd-cm-patch.yaml").read_text())
    assert not cm_patch.is_stale(patch, health)
    lua = health / "inferenceservice.lua"
    lua.write_text(lua.read_text().replace('"Suspended"', '"Healthy"'))
    assert cm_patch.is_stale(patch, health)
    patch.write_text(cm_patch.render(health))
    assert not cm_patch.is_stale(patch, health)
    data = yaml.safe_load(patch.read_text())["data"]
    assert data["resource.customizations.health.serving.kserve.io_InferenceService"] == lua.read_text()


def test_a_lua_file_a_literal_block_cannot_hold_is_refused(tmp_path: Path) -> None:
    health = tmp_path / "health"
    shutil.copytree(ROOT / "argocd/health", health)
    (health / "application.lua").write_text("return {status = 'Healthy'}\n\n\n")
    with pytest.raises(ValueError, match="literal block"):
        _cm_patch_module().render(health)
