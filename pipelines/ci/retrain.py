"""`sluice ci retrain`: train on the newest data and, when the new version beats the champion, release
it through Git like any other release.

Run by the `retrain` workflow (on a schedule, by hand, or on a drift alert through
`repository_dispatch`); the local runner runs the same file. Steps:

1. train on the data the settings name (`--data-dir`, else `ROSSMANN_DATA_DIR`, else generated) and
   register a version (model/registry.py);
2. gate it against the champion on days neither model was fitted or tuned on (model/evaluation.py);
   a version that does not beat it is registered, tagged with the verdict, and not released;
3. when it passes, commit the release file naming the new version (a release file that follows an
   alias gets the alias moved instead, and the sync step renders it) and push, to the main branch or,
   with `--branch`, to a branch for review;
4. on the main branch, render it in the same job (`sluice ci promote`): a canary, like any release.
Nothing promotes outside Git.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.ci.common import connect_registry, export_client_env, gate_for, report, s3_for
from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.gitops.commit import Outcome
from pipelines.gitops.release import ReleaseError, set_version
from pipelines.gitops.write import commit_state, open_model
from pipelines.promotion.promote import Context, promote
from pipelines.registry import CHAMPION, Registry, RegistryError


def release_new_version(repo: Path, model: str, version: str, reason: str, registry: Registry, push: bool) -> Outcome:
    """Name `version` in the release file and commit it (or move the alias the file follows)."""
    opened = open_model(repo, model)
    if isinstance(opened, Outcome):
        return opened
    tx, state = opened
    release = state.release
    if release is None:
        return Outcome("refused", state.release_error or f"{model}: no release file")
    if release.alias is not None:
        try:
            registry.set_alias(model, release.alias, version)
        except RegistryError as exc:
            return Outcome("error", f"retrained v{version} passes, but alias {release.alias} could not be moved: {exc}")
        return Outcome(
            "retrain",
            f"{model} v{version} passes the gate; alias {release.alias} -> v{version}: the sync step renders it",
        )
    try:
        text = set_version(state.release_text or "", version, f"set by sluice retrain: {reason}", state.paths.release)
    except ReleaseError as exc:
        return Outcome("error", f"cannot name v{version} in {state.paths.release}: {exc}")
    tx.write(state.paths.release, text)
    trailers = {"Model": model, "Version": version, "Step": "", "Action": "retrain", "Reason": reason}
    return commit_state(
        tx,
        action="retrain",
        message=f"{model} v{version} beats the champion: named in {state.paths.release}",
        subject=f"{model}: retrain, release v{version}",
        body=[f"Gate: {reason}", "The rollout proceeds like any release: a canary, gated on the serving metrics."],
        trailers=trailers,
        push=push,
    )


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from mlflow import MlflowClient

    from model.evaluation import evaluate
    from model.registry import log_and_register
    from model.training import TrainConfig, train
    from pipelines.train import load_data

    export_client_env(settings)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model = args.model or settings.model_name
    repo = Path(args.repo)
    raw = load_data(args, settings)
    config = TrainConfig.quick() if args.preset == "quick" else TrainConfig()
    registered = log_and_register(train(raw, config), model)
    assert registered is not None
    version = registered.version
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    verdict = evaluate(client, model, version, CHAMPION, raw)
    print(f"[{model}] retrained v{version}: {'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}", flush=True)
    if not verdict.passed:
        print(f"[{model}] v{version} stays registered (gate.* tags say why) and is not released", flush=True)
        return 0
    registry = connect_registry(settings)
    if args.branch:
        git.git(repo, "checkout", "-B", args.branch)
    released = release_new_version(repo, model, version, verdict.reason, registry, push=False)
    if released.failed or args.branch or not released.commit:
        if args.branch and not released.failed and args.push:
            git.git(repo, "push", "--force-with-lease", "origin", f"HEAD:refs/heads/{args.branch}")
            print(f"[{model}] pushed {args.branch} for review: merge it to release v{version}", flush=True)
        return report([(model, released)])
    outcomes = [(model, released)]
    if args.push:
        try:
            git.push(git.toplevel(repo), released.commit + "~1")
        except git.PushRejected as exc:
            return report([*outcomes, (model, Outcome("refused", str(exc)))])
    ctx = Context(registry, s3_for(settings), gate_for(settings), args.push)
    outcomes.append((model, promote(repo, model, ctx)))
    return report(outcomes)
