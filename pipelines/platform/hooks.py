"""Server-side hooks of the embedded GitOps remote: `python -m pipelines.platform.hooks pre-receive|post-receive`.

Git runs them in the bare repository with the pushed updates on stdin ("<old> <new> <ref>" lines);
what they print reaches the pusher as `remote: ...` lines.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.platform.gitserver import ZERO, load_hook_settings


def _updates(lines: Sequence[str]) -> list[tuple[str, str, str]]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out


def pre_receive(repo: Path, settings: Settings, lines: Sequence[str]) -> int:
    from pipelines.ci.check import check
    from pipelines.ci.common import connect_registry, gate_for, s3_for

    main = f"refs/heads/{settings.gitops_branch}"
    status = 0
    for old, new, ref in _updates(lines):
        if not ref.startswith("refs/heads/"):
            continue
        if new == ZERO:
            if ref == main:
                print(f"sluice: deleting {settings.gitops_branch} is not allowed")
                status = 1
            continue
        if (
            ref == main
            and old != ZERO
            and git.git(repo, "merge-base", "--is-ancestor", old, new, check=False).returncode
        ):
            print(f"sluice: {settings.gitops_branch} only moves forward: pull, rebase your change and push again")
            status = 1
            continue
        print(f"sluice: checking {ref.removeprefix('refs/heads/')} {new[:10]} ...", flush=True)
        result = check(
            repo,
            new,
            None if old == ZERO else old,
            connect_registry(settings),
            s3_for(settings),
            gate_for(settings),
            settings.ci_bot_names,
        )
        print(result.render(), flush=True)
        if not result.ok:
            print("sluice: push refused; nothing was written. Fix the release file and push again.")
            status = 1
    return status


def post_receive(repo: Path, settings: Settings, lines: Sequence[str]) -> int:
    from pipelines.platform import ci_queue

    for old, new, ref in _updates(lines):
        if new == ZERO or not ref.startswith("refs/heads/"):
            continue
        commits = git.commits_between(repo, None if old == ZERO else old, new)
        people = [c for c in commits if c.committer not in settings.ci_bot_names]
        if not people:
            continue  # the CI bot's own push: like GitHub, it triggers no workflow
        job = ci_queue.enqueue(
            settings,
            "push",
            ref=ref,
            before=None if old == ZERO else old,
            after=new,
            pusher=people[0].committer,
        )
        print(f"sluice CI: queued job {job.id}; follow it with `sluice ci log -f` (or make ci-log)", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in ("pre-receive", "post-receive"):
        print("usage: python -m pipelines.platform.hooks pre-receive|post-receive", file=sys.stderr)
        return 2
    settings = load_hook_settings()
    lines = sys.stdin.read().splitlines()
    repo = Path.cwd()
    try:
        if args[0] == "pre-receive":
            return pre_receive(repo, settings, lines)
        return post_receive(repo, settings, lines)
    except Exception as exc:  # a hook that crashes must still say why, in one line
        print(f"sluice {args[0]} hook failed: {type(exc).__name__}: {exc}")
        return 1 if args[0] == "pre-receive" else 0


if __name__ == "__main__":
    sys.exit(main())
