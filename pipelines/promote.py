"""`sluice promote`, `sluice sync`, `sluice history`: turn a registered model version into a Git commit.

Git says what serves (gitops/models/<model>/inferenceservice.yaml); the registry says what exists.
`promote` checks a version (exists, READY, artifacts present, has a signature, passes the evaluation
gate against the current champion), renders the InferenceService at the first canary step (or
straight to 100% when nothing serves yet) and commits it with `Sluice-*` trailers that `history`
and `rollout` read back. Every refusal happens before anything is written, and any failure after
that resets the branch to where it was: a refused promotion changes nothing in Git or the registry.

The functions here take explicit inputs (repository path, Registry, gate and artifact checkers)
and return an Outcome, so tests drive them directly; the cmd_* handlers only wire them up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import gitrepo
from pipelines.config import Settings
from pipelines.registry_client import Registry, RegistryError, VersionInfo, resolve
from pipelines.release import RELEASE_FILENAME, ReleaseError, load_release
from pipelines.render import (
    A_PREVIOUS_RUN_ID,
    A_PREVIOUS_STORAGE_URI,
    A_PREVIOUS_VERSION,
    A_RUN_ID,
    A_VERSION,
    ANNOTATION_PREFIX,
    MANIFEST_FILENAME,
    ResolvedVersion,
    read_manifest,
    render_inference_service,
    write_manifest,
)

CHAMPION, PREVIOUS = "champion", "previous"
A_FORCED_REASON = ANNOTATION_PREFIX + "forced-reason"
VERDICT_TAG, BASELINE_TAG, GATE_REASON_TAG = "gate.verdict", "gate.baseline_version", "gate.reason"
ROLLED_BACK_TAG = "sluice.rolled_back"


# --- state in Git ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPaths:
    root: Path  # the repository's top level
    model: str

    @property
    def folder(self) -> str:  # relative to root, as git wants it
        return f"gitops/models/{self.model}"

    @property
    def release(self) -> str:
        return f"{self.folder}/{RELEASE_FILENAME}"

    @property
    def manifest(self) -> str:
        return f"{self.folder}/{MANIFEST_FILENAME}"


@dataclass(frozen=True)
class GitState:
    """What Git declares for one model, read from the rendered manifest at HEAD."""

    model: str
    manifest: dict[str, Any] | None

    @property
    def annotations(self) -> dict[str, str]:
        return dict((self.manifest or {}).get("metadata", {}).get("annotations", {}) or {})

    @property
    def predictor(self) -> dict[str, Any]:
        return dict((self.manifest or {}).get("spec", {}).get("predictor", {}) or {})

    @property
    def version(self) -> str | None:
        """The version the manifest's spec names (the canary while a rollout runs)."""
        return self.annotations.get(A_VERSION) if self.manifest else None

    @property
    def canary_percent(self) -> int | None:
        value = self.predictor.get("canaryTrafficPercent")
        return None if value is None else int(value)

    @property
    def previous_version(self) -> str | None:
        return self.annotations.get(A_PREVIOUS_VERSION)

    @property
    def phase(self) -> str:
        """empty (nothing released), stable (fully rolled out), canary (0 < % <= 100), rollback (0%)."""
        if self.manifest is None:
            return "empty"
        if self.canary_percent is None:
            return "stable"
        return "rollback" if self.canary_percent == 0 else "canary"

    @property
    def stable_version(self) -> str | None:
        """The version that has (or keeps) the rolled-out revision."""
        if self.phase == "stable":
            return self.version
        if self.phase in ("canary", "rollback"):
            return self.previous_version
        return None

    def serving(self) -> ResolvedVersion | None:
        """The fully rolled-out version as a ResolvedVersion (the `previous` of the next promotion)."""
        if self.phase != "stable" or self.manifest is None:
            return None
        return ResolvedVersion(
            name=self.model,
            version=str(self.version),
            run_id=self.annotations.get(A_RUN_ID, ""),
            storage_uri=str(self.predictor.get("model", {}).get("storageUri", "")),
        )

    def previous(self) -> ResolvedVersion | None:
        a = self.annotations
        if not a.get(A_PREVIOUS_VERSION):
            return None
        return ResolvedVersion(
            self.model, a[A_PREVIOUS_VERSION], a.get(A_PREVIOUS_RUN_ID, ""), a.get(A_PREVIOUS_STORAGE_URI, "")
        )

    def describe(self) -> str:
        if self.phase == "empty":
            return "nothing released yet"
        if self.phase == "stable":
            return f"v{self.version} serves 100%"
        if self.phase == "rollback":
            return f"v{self.version} rolled back to 0% (v{self.previous_version} serves 100%; spec restore pending)"
        return f"v{self.version} canary at {self.canary_percent}% (v{self.previous_version} serves the rest)"


def read_state(paths: ModelPaths) -> GitState:
    path = paths.root / paths.manifest
    try:
        return GitState(paths.model, read_manifest(path))
    except FileNotFoundError:
        return GitState(paths.model, None)


def model_paths(repo: Path, model: str) -> ModelPaths:
    return ModelPaths(gitrepo.toplevel(repo), model)


# --- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a command did. `refused` means nothing changed; `action` names the decision."""

    action: str  # promote | advance | finalize | hold | rollback | noop | refused | error
    message: str
    commit: str | None = None
    push: gitrepo.PushResult | None = None
    details: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"refused": 2, "error": 1}.get(self.action, 0)

    def render(self) -> str:
        lines = [("REFUSED: " if self.action == "refused" else "") + self.message, *self.details]
        if self.commit:
            lines.append(f"commit {self.commit[:12]}")
        if self.push:
            lines.append(
                f"pushed to {self.push.remote}/{self.push.branch}"
                + (" (rebased onto the moved remote)" if self.push.rebased else "")
            )
        return "\n".join(lines)


def refused(message: str, *details: str) -> Outcome:
    return Outcome("refused", message, details=list(details))


def clean_repo(repo: Path, model: str) -> tuple[ModelPaths, str] | Outcome:
    """The model's paths in `repo` and its HEAD, or a refusal: not a git repository, uncommitted
    changes, or no branch checked out (a commit there could not be pushed)."""
    try:
        paths = model_paths(repo, model)
    except gitrepo.GitError as exc:
        return refused(str(exc))
    dirty = gitrepo.dirty_paths(paths.root)
    if dirty:
        return refused(
            f"the working tree of {paths.root} has uncommitted changes; commit or stash them first:",
            *(f"  {d}" for d in dirty[:20]),
        )
    try:
        gitrepo.current_branch(paths.root)
        return paths, gitrepo.head(paths.root)
    except gitrepo.GitError as exc:
        return refused(str(exc))


def commit_change(
    paths: ModelPaths,
    files: list[str],
    before: str,
    subject: str,
    body: str,
    trailers: dict[str, str],
    push: bool,
) -> tuple[str, gitrepo.PushResult | None]:
    """Commit what the caller wrote (and push). On any failure: back to `before`, untracked files gone."""
    try:
        sha = gitrepo.commit(paths.root, files, subject, body, trailers)
        pushed = gitrepo.push(paths.root, before) if push else None
        return (pushed.sha if pushed else sha), pushed
    except BaseException:
        restore(paths, before, files)
        raise


def restore(paths: ModelPaths, before: str, files: list[str]) -> None:
    """Put the branch, index and the files we touched back to commit `before`."""
    gitrepo.git(paths.root, "reset", "--quiet", "--hard", before, check=False)
    for f in files:
        if gitrepo.show_file(paths.root, before, f) is None:
            (paths.root / f).unlink(missing_ok=True)


# --- checks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactReport:
    exists: bool
    mlmodel: str | None  # the MLmodel file's text, when readable
    detail: str


ArtifactChecker = Callable[[str], ArtifactReport]
# (registry, model, candidate version, baseline version) -> (passed, reason)
GateRunner = Callable[[Registry, str, str, str], tuple[bool, str]]


def check_artifacts(uri: str, s3: Any = None) -> ArtifactReport:
    """Are there objects under the version's download URI, and what does its MLmodel say?"""
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = uri.removeprefix("s3://").partition("/")
        prefix = key.rstrip("/") + "/" if key else ""
        client = s3 or default_s3_client()
        try:
            resp = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):
                return ArtifactReport(False, None, f"bucket {bucket!r} does not exist")
            return ArtifactReport(False, None, f"cannot list {uri}: {exc}")
        except BotoCoreError as exc:
            return ArtifactReport(False, None, f"cannot reach S3 to check {uri}: {exc}")
        if int(resp.get("KeyCount", 0)) == 0:
            return ArtifactReport(False, None, f"no objects under {uri}")
        try:
            body = client.get_object(Bucket=bucket, Key=prefix + "MLmodel")["Body"].read()
            return ArtifactReport(True, body.decode("utf-8", "replace"), "ok")
        except (ClientError, BotoCoreError):
            return ArtifactReport(True, None, f"no MLmodel file under {uri}")
    local = Path(uri.removeprefix("file://")) if uri.startswith("file://") or uri.startswith("/") else None
    if local is None:
        return ArtifactReport(False, None, f"cannot check artifacts at {uri!r} (not s3:// or a local path)")
    if not local.is_dir() or not any(local.iterdir()):
        return ArtifactReport(False, None, f"no files under {local}")
    mlmodel = local / "MLmodel"
    return ArtifactReport(True, mlmodel.read_text(encoding="utf-8") if mlmodel.exists() else None, "ok")


def default_s3_client() -> Any:
    """boto3 S3 client for the env `configure()` sets (LocalStack: path-style, endpoint override)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or None
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            s3={"addressing_style": "path" if endpoint else "auto"},
            retries={"max_attempts": 2},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def signature_problem(mlmodel: str | None) -> str | None:
    """None when the MLmodel declares an input signature; otherwise why not."""
    if mlmodel is None:
        return "its MLmodel file is missing, so it has no signature"
    try:
        doc = yaml.safe_load(mlmodel)
    except yaml.YAMLError as exc:
        return f"its MLmodel file is not valid YAML ({exc})"
    sig = (doc or {}).get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return "it was logged without a signature (the runtime derives its V2 metadata and input checks from it)"
    return None


def run_evaluation_gate(settings: Settings) -> GateRunner:
    """The real gate: model.evaluation.evaluate (loads both models; heavy imports only here)."""

    def gate(registry: Registry, model: str, candidate: str, baseline: str) -> tuple[bool, str]:
        from mlflow import MlflowClient

        from model.evaluation import evaluate
        from pipelines.train import data_for_source

        client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
        cand = client.get_model_version(model, candidate)
        args = argparse.Namespace(data_dir=None, stores=None, days=None, seed=None)
        raw = data_for_source(cand.tags.get("data.source", ""), args, settings)
        verdict = evaluate(client, model, candidate, baseline, raw)
        return verdict.passed, verdict.reason

    return gate


def gate_baseline(registry: Registry, model: str, state: GitState, candidate: str) -> str | None:
    """The version to beat: the `champion` alias, else what Git serves, else none (first release)."""
    champion = registry.get_alias(model, CHAMPION)
    if champion is not None and champion.version != candidate:
        return champion.version
    stable = state.stable_version
    if stable and stable != candidate:
        return stable
    return None


def check_gate(
    registry: Registry, model: str, cand: VersionInfo, baseline: str | None, gate: GateRunner
) -> tuple[bool, str]:
    """Use the verdict recorded on the version if it was against this baseline; otherwise evaluate."""
    if baseline is None:
        return True, "first release: no champion to compare against"
    recorded, against = cand.tags.get(VERDICT_TAG), cand.tags.get(BASELINE_TAG)
    if recorded in ("pass", "fail") and against == baseline:
        reason = cand.tags.get(GATE_REASON_TAG) or f"recorded verdict against v{baseline}"
        return recorded == "pass", f"recorded gate verdict: {reason}"
    passed, reason = gate(registry, model, cand.version, baseline)
    return passed, f"evaluated now: {reason}"


# --- promote -------------------------------------------------------------------------------------


def promote(
    repo: Path,
    registry: Registry,
    model: str,
    ref: str,
    *,
    force: bool = False,
    reason: str | None = None,
    push: bool = False,
    gate: GateRunner,
    artifacts: ArtifactChecker = check_artifacts,
    via: str = "promote",
) -> Outcome:
    """Check `ref` (version or alias) and commit its InferenceService at the first rollout step."""
    if force and not (reason and reason.strip()):
        return refused("--force needs --reason: say why the evaluation gate is overridden (it is recorded)")
    checked = clean_repo(repo, model)
    if isinstance(checked, Outcome):
        return checked
    paths, before = checked
    try:
        release = load_release(paths.root / paths.release)
    except ReleaseError as exc:
        return refused(str(exc))
    state = read_state(paths)

    try:
        cand = resolve(registry, model, ref)
    except LookupError as exc:
        return refused(str(exc))
    except RegistryError as exc:
        return refused(str(exc))
    v = cand.version

    if state.version == v and state.phase == "stable":
        return Outcome("noop", f"{model} v{v} already serves 100%: nothing to do")
    if state.version == v and state.phase == "canary":
        return Outcome("noop", f"{model} v{v} is already being rolled out ({state.describe()}): nothing to do")
    if state.phase in ("canary", "rollback"):
        return refused(
            f"a rollout is in progress: {state.describe()}. Let `sluice rollout step` finish or roll it back "
            f"before promoting v{v}."
        )
    if cand.status != "READY":
        return refused(f"{model} v{v} is not READY (status {cand.status})")

    try:
        storage_uri = registry.download_uri(model, v)
    except RegistryError as exc:
        return refused(str(exc))
    report = artifacts(storage_uri)
    if not report.exists:
        return refused(f"{model} v{v} artifacts are missing: {report.detail}")
    if not storage_uri.startswith("s3://"):
        return refused(
            f"{model} v{v} is stored at {storage_uri!r}; KServe's storage initializer needs an s3:// URI "
            "(run MLflow with --no-serve-artifacts and an s3:// artifact root)"
        )
    problem = signature_problem(report.mlmodel)
    if problem:
        return refused(f"{model} v{v} cannot serve: {problem}")

    baseline = gate_baseline(registry, model, state, v)
    try:
        passed, gate_reason = check_gate(registry, model, cand, baseline, gate)
    except Exception as exc:  # the gate itself failed to run: that is not a pass
        passed, gate_reason = False, f"the evaluation gate could not run: {exc}"
    if not passed and not force:
        return refused(
            f"{model} v{v} fails the evaluation gate against v{baseline}: {gate_reason}",
            "override only with --force --reason '...' (recorded in the commit and the manifest)",
        )

    previous = state.serving()
    percent = None if previous is None else release.rollout.steps[0]
    resolved = ResolvedVersion(model, v, cand.run_id, storage_uri, cand.aliases)
    extra = {A_FORCED_REASON: gitrepo.one_line(reason or "")} if force else None
    try:
        doc = render_inference_service(release, resolved, percent, previous=previous, extra_annotations=extra)
    except ValueError as exc:
        return refused(f"cannot render the InferenceService: {exc}")

    write_manifest(paths.root / paths.manifest, doc)
    where = "100% (first release, nothing serves yet)" if percent is None else f"{percent}% canary"
    subject = f"{model}: promote v{v} to {where.split(' (')[0]}"
    why = gate_reason
    if force:
        # The human reason first: it is what a reader of `sluice history` needs.
        why = f"forced: {reason} (gate {'passed' if passed else 'FAILED'}: {gate_reason})"
    body_lines = [
        f"Requested: {ref} -> v{v} (run {cand.run_id})",
        f"Storage: {storage_uri}",
        f"Gate: {gate_reason}",
        f"Serving before: {state.describe()}",
        f"Rollout steps: {release.rollout.steps}",
    ]
    if force:
        body_lines.append(f"FORCED by --force: {reason}")
    trailers = {
        "Model": model,
        "Version": v,
        "Step": str(percent if percent is not None else 100),
        "Action": "promote",
        "Reason": why,
        "Previous-Version": previous.version if previous else "",
        "Forced": "yes" if force else "",
        "Via": via if via != "promote" else "",
    }
    try:
        sha, pushed = commit_change(paths, [paths.manifest], before, subject, "\n".join(body_lines), trailers, push)
    except gitrepo.PushRejected as exc:
        return refused(str(exc))
    except gitrepo.GitError as exc:
        return Outcome("error", f"commit failed, nothing changed: {exc}")

    details = [f"gate: {gate_reason}"]
    if release.version and release.version != v:
        details.append(f"note: {paths.release} names version {release.version}; this promotion used {ref} -> v{v}")
    if previous is None:
        # The first release is final at once: the registry's champion follows Git.
        try:
            registry.set_alias(model, CHAMPION, v)
            details.append(f"alias {CHAMPION} -> v{v}")
        except RegistryError as exc:
            details.append(f"WARNING: committed, but could not set alias {CHAMPION}: {exc}")
            return Outcome("error", f"{model} v{v} released at 100%", sha, pushed, details)
        msg = f"{model} v{v} released at 100% (first release)"
    else:
        msg = f"{model} v{v} promoted to a {percent}% canary (v{previous.version} keeps {100 - (percent or 0)}%)"
        details.append("next: `sluice rollout step` advances, holds or rolls back on the serving metrics")
    return Outcome("promote", msg, sha, pushed, details)


# --- sync ----------------------------------------------------------------------------------------


def sync(repo: Path, registry: Registry, model: str, alias: str, *, push: bool = False, gate: GateRunner) -> Outcome:
    """Registry-first: when `alias` names a version Git does not serve, promote it (same checks)."""
    try:
        paths = model_paths(repo, model)
    except gitrepo.GitError as exc:
        return refused(str(exc))
    state = read_state(paths)
    try:
        target = registry.get_alias(model, alias)
    except RegistryError as exc:
        return Outcome("error", str(exc))
    if target is None:
        return Outcome("noop", f"{model} has no alias {alias!r}: nothing to sync")
    if state.phase in ("canary", "rollback"):
        return Outcome("noop", f"rollout in progress ({state.describe()}): sync waits for it to finish")
    if state.version == target.version:
        return Outcome("noop", f"in sync: {alias} = v{target.version} and Git serves v{state.version}")
    if target.tags.get(ROLLED_BACK_TAG):
        return Outcome(
            "noop",
            f"{alias} = v{target.version}, which was rolled back ({target.tags[ROLLED_BACK_TAG]}); "
            "not promoting it again automatically: promote it explicitly or move the alias",
        )
    out = promote(repo, registry, model, target.version, push=push, gate=gate, via=f"sync {alias}")
    return out


# --- history -------------------------------------------------------------------------------------


def history(repo: Path, model: str) -> list[gitrepo.LogEntry]:
    return gitrepo.sluice_log(gitrepo.toplevel(repo), model)


def format_history(entries: list[gitrepo.LogEntry]) -> str:
    header = ["date", "action", "version", "step", "reason", "commit"]
    rows = [
        [e.date[:19].replace("T", " "), e.get("Action"), e.get("Version"), e.get("Step"), e.get("Reason"), e.sha[:10]]
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    widths[4] = min(widths[4], 90)

    def line(r: list[str]) -> str:
        cells = [c if len(c) <= widths[i] else c[: widths[i] - 1] + "…" for i, c in enumerate(r)]
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --- command handlers ----------------------------------------------------------------------------


def connect(settings: Settings) -> Registry:
    from pipelines.registry_client import connect as _connect
    from pipelines.train import configure

    configure(settings)
    return _connect(os.environ["MLFLOW_TRACKING_URI"])


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    model = args.model or settings.model_name
    ref = args.version or args.alias
    if ref is None:
        # CI's path: the human-edited release file says what to release.
        from pipelines.release import ReleaseError, load_release

        release_path = Path(args.repo) / "gitops" / "models" / model / "release.yaml"
        try:
            release = load_release(release_path)
        except ReleaseError as exc:
            print(f"error: no --version/--alias given and the release file is unusable: {exc}")
            return 2
        ref = release.version or release.alias
        print(f"releasing {model} {ref!r} as {release_path} asks")
    out = promote(
        Path(args.repo),
        connect(settings),
        model,
        ref,
        force=args.force,
        reason=args.reason,
        push=args.push,
        gate=run_evaluation_gate(settings),
    )
    print(out.render())
    return out.exit_code


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    model = args.model or settings.model_name
    out = sync(
        Path(args.repo), connect(settings), model, args.alias, push=args.push, gate=run_evaluation_gate(settings)
    )
    print(out.render())
    return out.exit_code


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    model = args.model or settings.model_name
    try:
        entries = history(Path(args.repo), model)
    except gitrepo.GitError as exc:
        print(f"error: {exc}")
        return 1
    if not entries:
        print(f"no sluice commits for {model} in {args.repo}")
        return 0
    print(format_history(entries))
    return 0
