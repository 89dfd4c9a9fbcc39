"""`sluice status`: the platform's services, what serves (from Git), the CI runner's jobs, the buckets
and every registered version's artifacts. Exit 1 when something needs attention, saying what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.agreement import disagreements
from pipelines.gitops.state import Revision, models, read_model
from pipelines.platform import ci_queue, localstack, mlflow_server
from pipelines.registry import RegistryError, check_artifacts, connect, s3_client


@dataclass(frozen=True)
class BucketState:
    name: str
    exists: bool
    versioning: str  # "Enabled", "Suspended", "-" (never enabled) or "?" when unknown


def bucket_states(settings: Settings) -> list[BucketState]:
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = s3_client(settings)
    states = []
    for name in (settings.models_bucket, settings.data_bucket):
        try:
            s3.head_bucket(Bucket=name)
        except (ClientError, BotoCoreError):
            states.append(BucketState(name, False, "?"))
            continue
        try:
            versioning = s3.get_bucket_versioning(Bucket=name).get("Status") or "-"
        except (ClientError, BotoCoreError):
            versioning = "?"
        states.append(BucketState(name, True, versioning))
    return states


@dataclass(frozen=True)
class ArtifactCheck:
    model: str
    version: str
    aliases: tuple[str, ...]
    uri: str
    ok: bool | None  # None: not an s3:// URI, cannot check
    detail: str


def check_registry_artifacts(settings: Settings) -> list[ArtifactCheck]:
    """For every registered model version: do the objects under its download URI exist in S3?"""
    registry = connect(settings.tracking_uri)
    s3 = s3_client(settings)
    checks: list[ArtifactCheck] = []
    for model in registry.models():
        aliases_of: dict[str, list[str]] = {}
        for alias, version in (registry.aliases(model) or {}).items():
            aliases_of.setdefault(version, []).append(alias)
        for version in registry.versions(model):
            uri = registry.download_uri(model, version)
            aliases = tuple(sorted(aliases_of.get(version, [])))
            if not uri.startswith("s3://"):
                checks.append(ArtifactCheck(model, version, aliases, uri, None, "not in S3"))
                continue
            report = check_artifacts(uri, s3)
            checks.append(
                ArtifactCheck(model, version, aliases, uri, report.exists, "ok" if report.exists else "MISSING")
            )
    return sorted(checks, key=lambda c: (c.model, int(c.version) if c.version.isdigit() else 0))


def serving_rows(settings: Settings) -> tuple[list[list[str]], list[str]]:
    """What Git says serves, per model, and where the records disagree."""
    remote = settings.gitops_remote_path
    if remote is None or not (remote / "HEAD").is_file() or git.resolve(remote, settings.gitops_branch) is None:
        return [], []
    source = Revision(remote, settings.gitops_branch)
    rows, problems = [["MODEL", "RELEASE FILE", "SERVING", "LAST DECISION"]], []
    try:
        registry = connect(settings.tracking_uri)
    except RegistryError:
        registry = None
    for name in models(source):
        try:
            state = read_model(source, name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        st = state.status
        last = f"{st.decision.action}: {st.decision.reason}"[:80] if st.decision else "-"
        rows.append([name, state.release.requested if state.release else "UNREADABLE", st.describe(), last])
        try:
            aliases = registry.aliases(name) if registry is not None else None
        except RegistryError:
            aliases = None
        problems += disagreements(state, aliases)
    return rows, problems


def print_status(settings: Settings, services: list[Any], table: Callable[[list[list[str]]], str]) -> int:
    problems: list[str] = []
    rows = [["SERVICE", "URL", "PID", "STATE"]] + [[s.name, s.url, s.pid, s.state] for s in services]
    print(table(rows))
    for s in services:
        if s.state == "DOWN":
            problems.append(f"{s.name} is down: run `sluice up` (make up); logs in {settings.logs_dir}")

    served, disagree = serving_rows(settings)
    if served:
        print()
        print(table(served))
        problems += disagree

    jobs = ci_queue.results(settings, limit=5)
    waiting = ci_queue.pending(settings) + ci_queue.running(settings)
    if jobs or waiting:
        print()
        rows = [["CI JOB", "EVENT", "WORKFLOWS", "RESULT", "SECONDS", "FINISHED"]]
        rows += [[j.id, j.event + (f" {j.workflow}" if j.workflow else ""), "-", "queued", "-", "-"] for j in waiting]
        for r in reversed(jobs):
            names = ",".join(w["workflow"] for w in r.workflows) or "-"
            rows.append([r.job.id, r.job.event, names, r.status, f"{r.seconds:.1f}", r.finished_at])
        print(table(rows))

    ls_ok = localstack.localstack_healthy(settings) or not localstack.manages_localstack(settings)
    ml_ok = mlflow_server.mlflow_healthy(settings) or not mlflow_server.manages_mlflow(settings)
    if ls_ok:
        print()
        buckets = [["BUCKET", "EXISTS", "VERSIONING"]]
        for b in bucket_states(settings):
            buckets.append([b.name, "yes" if b.exists else "NO", b.versioning])
            if not b.exists:
                problems.append(f"bucket {b.name} is missing: run `sluice up` (re-applies terraform/storage)")
        print(table(buckets))
    if ls_ok and ml_ok:
        print()
        checks = check_registry_artifacts(settings)
        if not checks:
            print("no registered model versions yet: `sluice train` (make train) registers one")
        else:
            rows = [["MODEL", "VERSION", "ALIASES", "ARTIFACTS", "URI"]]
            rows += [[c.model, c.version, ",".join(c.aliases) or "-", c.detail, c.uri] for c in checks]
            print(table(rows))
        missing = [c for c in checks if c.ok is False]
        if missing:
            names = ", ".join(f"{c.model} v{c.version}" for c in missing)
            problems.append(
                f"artifacts of {names} are gone from S3 (deleted, or lost before the mirror copied them): retrain "
                "with `make train` and name the new version in the release file; do not promote the missing ones"
            )
    if problems:
        print()
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        return 1
    return 0
