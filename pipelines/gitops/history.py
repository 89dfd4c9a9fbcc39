"""`sluice history`: a model's releases, canary steps, rollbacks and write-backs, read from the
`Sluice-*` trailers of the commits that made them."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.config import Settings
from pipelines.gitops import git


def history(repo: Path, model: str, rev: str = "HEAD") -> list[git.LogEntry]:
    return git.sluice_log(repo, model, rev=rev)


def format_history(entries: list[git.LogEntry]) -> str:
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


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    model = args.model or settings.model_name
    repo = Path(args.repo) if args.repo else settings.gitops_remote_path
    if repo is None:
        print("error: the GitOps remote is not local; pass --repo with a clone of it")
        return 2
    branch = "HEAD" if args.repo else settings.gitops_branch
    try:
        entries = history(repo, model, branch)
    except git.GitError as exc:
        print(f"error: {exc}")
        return 1
    if not entries:
        print(f"no sluice commits for {model} in {repo}")
        return 0
    print(format_history(entries))
    return 0
