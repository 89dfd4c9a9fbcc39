"""`sluice ci promote` and `sluice ci sync`: render what each release file asks for.

`promote` runs on a push that changes a release file (promote workflow); `sync` runs on a schedule
for release files that name an alias, so a moved alias reaches Git (sync workflow). Both are the
same reconcile (promotion/promote.py): idempotent, so a rerun, a retry after a fault or two jobs in
a row do the work once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.ci.common import connect_registry, gate_for, model_names, report, s3_for
from pipelines.config import Settings
from pipelines.promotion.promote import Context, promote


def _run(args: argparse.Namespace, settings: Settings, only_alias: bool) -> int:
    repo = Path(args.repo)
    names = model_names(repo, args.model)
    if not names:
        print(f"no release files under gitops/models/{args.model or '*'}/ in {repo}: nothing to do")
        return 0 if args.model is None else 2
    ctx = Context(connect_registry(settings), s3_for(settings), gate_for(settings), push=args.push)
    return report((m, promote(repo, m, ctx, only_alias=only_alias)) for m in names)


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, only_alias=False)


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, only_alias=True)
