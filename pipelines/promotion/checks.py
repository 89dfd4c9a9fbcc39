"""Can a registered version serve? The checks a release must pass before Git may name it.

The pre-receive hook (`sluice ci check`), `sluice ci promote` and `sluice ci sync` run exactly these,
so a push the hook accepts is a push CI can render. In order: the reference resolves in the registry,
the version is READY, its download URI is an `s3://` prefix with objects under it, its MLmodel has a
signature, an alias does not name a version that was rolled back, and (unless a person overrides it
with a reason) the evaluation gate passes against the version to beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.config import Settings
from pipelines.gitops.status import Status
from pipelines.registry import (
    BASELINE_TAG,
    CHAMPION,
    GATE_REASON_TAG,
    ROLLED_BACK_TAG,
    VERDICT_TAG,
    Registry,
    RegistryError,
    VersionInfo,
    check_artifacts,
    resolve,
    signature_problem,
)

# (registry, model, candidate version, baseline version) -> (passed, reason)
GateRunner = Callable[[Registry, str, str, str], tuple[bool, str]]


@dataclass(frozen=True)
class Candidate:
    """A version that passed every check but the gate."""

    info: VersionInfo
    storage_uri: str

    @property
    def version(self) -> str:
        return self.info.version


@dataclass(frozen=True)
class Refusal:
    reason: str


def check_candidate(registry: Registry, s3: Any, model: str, ref: str, *, by_alias: bool) -> Candidate | Refusal:
    """Resolve `ref` (a version number or an alias) and check that the version can serve."""
    try:
        info = resolve(registry, model, ref)
    except LookupError as exc:
        return Refusal(str(exc))
    except RegistryError as exc:
        return Refusal(f"cannot check {model} {ref!r}: {exc}")
    v = info.version
    if by_alias and info.tags.get(ROLLED_BACK_TAG):
        return Refusal(
            f"alias {ref!r} names {model} v{v}, which was rolled back ({info.tags[ROLLED_BACK_TAG]}); "
            f"move the alias to a good version, or name v{v} explicitly in release.yaml to try it again"
        )
    if info.status != "READY":
        return Refusal(f"{model} v{v} is not READY (status {info.status})")
    try:
        uri = registry.download_uri(model, v)
    except RegistryError as exc:
        return Refusal(str(exc))
    if not uri.startswith("s3://"):
        return Refusal(
            f"{model} v{v} is stored at {uri!r}; KServe's storage initializer needs an s3:// URI "
            "(run MLflow with --no-serve-artifacts and an s3:// artifact root)"
        )
    report = check_artifacts(uri, s3)
    if not report.exists:
        return Refusal(f"{model} v{v} artifacts are missing: {report.detail}")
    problem = signature_problem(report.mlmodel)
    if problem:
        return Refusal(f"{model} v{v} cannot serve: {problem}")
    return Candidate(info, uri)


def gate_baseline(registry: Registry, model: str, status: Status, candidate: str) -> str | None:
    """The version to beat: the `champion` alias, else what Git serves, else none (first release)."""
    champion = registry.get_alias(model, CHAMPION)
    if champion is not None and champion.version != candidate:
        return champion.version
    stable = status.stable.version if status.stable else None
    if stable and stable != candidate:
        return stable
    return None


def check_gate(
    registry: Registry, model: str, candidate: VersionInfo, baseline: str | None, gate: GateRunner
) -> tuple[bool, str]:
    """The verdict recorded on the version if it was against this baseline; otherwise evaluate now."""
    if baseline is None:
        return True, "first release: no champion to compare against"
    recorded, against = candidate.tags.get(VERDICT_TAG), candidate.tags.get(BASELINE_TAG)
    if recorded in ("pass", "fail") and against == baseline:
        reason = candidate.tags.get(GATE_REASON_TAG) or f"recorded verdict against v{baseline}"
        return recorded == "pass", f"recorded gate verdict: {reason}"
    try:
        passed, reason = gate(registry, model, candidate.version, baseline)
    except Exception as exc:  # the gate itself failed to run: that is not a pass
        return False, f"the evaluation gate could not run: {exc}"
    return passed, f"evaluated now: {reason}"


def evaluation_gate(settings: Settings) -> GateRunner:
    """The real gate: model.evaluation.evaluate, which loads both models (heavy imports only here)."""

    def gate(registry: Registry, model: str, candidate: str, baseline: str) -> tuple[bool, str]:
        from mlflow import MlflowClient

        from model.evaluation import evaluate
        from pipelines.train import data_for_source

        client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
        cand = client.get_model_version(model, candidate)
        raw = data_for_source(cand.tags.get("data.source", ""), None, settings)
        verdict = evaluate(client, model, candidate, baseline, raw)
        return verdict.passed, verdict.reason

    return gate
