"""`sluice ci rollout`: one rollout step for every model with a canary in progress.

Run on a schedule (rollout workflow; the local runner's ticker while a canary is in progress). When a
step ends a rollout (finalized, or rollback complete), the same job then renders the release file as
it stands, so an edit that arrived during the rollout is applied right away, not dropped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

from pipelines.ci.common import connect_registry, gate_for, model_names, report, s3_for
from pipelines.config import Settings
from pipelines.gitops.commit import Outcome
from pipelines.promotion.promote import Context, promote
from pipelines.rollout.step import step

ENDS_ROLLOUT = ("finalize", "complete")


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> int:
    repo = Path(args.repo)
    prometheus = args.prometheus_url or settings.prometheus_url or None
    registry = connect_registry(settings)

    def run() -> Iterator[tuple[str, Outcome]]:
        for model in model_names(repo, args.model):
            out = step(repo, model, registry, prometheus=prometheus, push=args.push, env=os.environ)
            yield model, out
            if out.action in ENDS_ROLLOUT and not out.failed:
                yield model, promote(repo, model, Context(registry, s3_for(settings), gate_for(settings), args.push))

    return report(run())
