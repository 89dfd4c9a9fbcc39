"""No secret value anywhere in the Git history: detect-secrets over every line any commit added.

A secret committed once and deleted in the next commit is still in every clone, so scanning the
working tree is not enough. `git log --all -p --unified=0` lists what each commit of every ref
added (merges as combined diffs, so a line a merge itself introduced counts too); the added lines
of each path, deduplicated, are written to a temporary file named like the original (detect-secrets
picks its keyword patterns by file type) and scanned with detect-secrets' own file scanner, every
plugin and its default heuristic filters on. Line N of a scanned file maps back to the commits that
added that line.

Exclusions and the allowlist live here and nowhere else; each says why. Results are cached per
commit under the state dir (commits never change), so a second run scans only new commits.

    python -m pipelines.security.history [REPO]      # exit 1 and a list when something is found
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Files never scanned (git pathspec globs). Only lock files: every line of them is written by a
# tool, and they hold package and provider checksums (sha256/h1 hashes), which the entropy plugins
# report by the hundred; none of them can hold a credential.
EXCLUDED_FILES: dict[str, str] = {
    "**/uv.lock": "uv's lock file: package names, versions, URLs and sha256 hashes written by `uv lock`",
    "**/.terraform.lock.hcl": "terraform's provider lock: versions and h1/zh checksums written by `terraform init`",
}

# Values that look like secrets to a scanner but are not. Matched exactly against the value
# detect-secrets reports, whatever the detector.
ALLOWED_VALUES: dict[str, str] = {
    "test": (
        "LocalStack's documented dummy credentials (AWS_ACCESS_KEY_ID=test, AWS_SECRET_ACCESS_KEY=test): "
        "LocalStack accepts any key, the embedded platform and the tests use this pair on 127.0.0.1, "
        "and it opens nothing anywhere else"
    ),
    "model=rossmann/version=__HIVE_DEFAULT_PARTITION__/date=2026-05-28/": (
        "a Hive-style partition path in a test of the inference log's object keys (long, with "
        "base64 characters only, so the entropy plugin takes it for a key)"
    ),
}


@dataclass(frozen=True)
class Finding:
    path: str
    kind: str  # detect-secrets' secret type, e.g. "AWS Access Key"
    commits: tuple[str, ...]  # every commit that added the line, oldest first
    line: str  # the line, with the secret itself masked

    def describe(self) -> str:
        shas = ", ".join(c[:12] for c in self.commits)
        return f"{self.path}: {self.kind} added in {shas}: {self.line.strip()[:160]}"


def _git_log(repo: Path) -> str:
    cmd = [
        "git", "-C", str(repo), "-c", "core.quotePath=false",
        "log", "--all", "--reverse", "-p", "--cc", "--unified=0",
        "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--diff-filter=d",
        "--src-prefix=a/", "--dst-prefix=b/", "--format=commit %H %P",
        "--", ".", *(f":(exclude,glob){pattern}" for pattern in EXCLUDED_FILES),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git log failed in {repo}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode("utf-8", errors="replace")


def _target_path(header: str) -> str | None:
    """The path in a `+++ b/<path>` line (git C-quotes paths with unusual characters)."""
    raw = header[4:]
    if raw.startswith('"'):
        raw = ast.literal_eval(raw)
    return raw[2:] if raw.startswith("b/") else None  # /dev/null: nothing added


@dataclass
class AddedLines:
    commits: list[str]  # every commit of every ref, oldest first
    lines: dict[str, dict[str, list[str]]]  # {path: {added line: [commits that added it]}}, skipped ones left out


def added_lines(repo: Path, skip: Collection[str] = ()) -> AddedLines:
    """What every commit of every ref added, per path, deduplicated; commits in `skip` are listed but
    their lines left out.

    In a merge's combined diff a line carries one marker column per parent; it is new in the merge
    only when every column says `+` (otherwise it came from a parent, whose commit is scanned anyway).
    """
    out = AddedLines([], {})
    sha, columns, path, in_header, wanted = "", 1, None, False, False
    for line in _git_log(repo).split("\n"):
        # Within a hunk every line starts with a marker column (+, - or space), so "commit " and
        # "diff " are headers there; "+++ " and "@@" only count in a file header (an added line
        # may well read "++ x").
        if line.startswith("commit "):
            sha, *parents = line[len("commit ") :].split()
            columns, path, in_header, wanted = max(len(parents), 1), None, False, sha not in skip
            out.commits.append(sha)
        elif line.startswith("diff "):
            path, in_header = None, True
        elif in_header:
            if line.startswith("+++ "):
                path = _target_path(line)
            elif line.startswith("@@"):
                in_header = False
        elif wanted and path is not None and line[:columns] == "+" * columns:
            text = line[columns:].replace("\r", " ")  # one scanned line per added line
            commits = out.lines.setdefault(path, {}).setdefault(text, [])
            if sha not in commits:
                commits.append(sha)
    return out


def _mask(line: str, secret: str | None) -> str:
    if not secret:
        return line
    return line.replace(secret, secret[:4] + "*" * max(len(secret) - 4, 3))


def _digest(value: str) -> str:
    # detect-secrets' own `hashed_secret`: the cache and the allowlist compare these, never values.
    return hashlib.sha1(value.encode()).hexdigest()


def _scan(lines: dict[str, dict[str, list[str]]], processes: int | None) -> dict[str, list[list[str]]]:
    """{commit: [[path, detector, masked line, secret digest], ...]} for what detect-secrets finds
    (run under default_settings by the caller)."""
    from detect_secrets import SecretsCollection

    found: dict[str, list[list[str]]] = {}
    if not lines:
        return found
    with tempfile.TemporaryDirectory(prefix="sluice-secrets-") as tmp:
        for path, added in lines.items():
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(f"{text}\n" for text in added), encoding="utf-8")
        collection = SecretsCollection(root=tmp)
        collection.scan_files(*lines, num_processors=processes)
        for path in sorted(collection.files):
            texts = list(lines[path])
            for secret in sorted(collection[path], key=lambda s: s.line_number):
                text = texts[secret.line_number - 1]
                hit = [path, secret.type, _mask(text, secret.secret_value), _digest(secret.secret_value or "")]
                for sha in lines[path][text]:
                    found.setdefault(sha, []).append(hit)
    return found


def _cache_file(cache_dir: Path, settings_json: Any) -> Path:
    """Results are kept per commit (commits never change), under a name that changes with anything
    that could change them: detect-secrets' version and settings, the exclusions, this format."""
    from importlib.metadata import version

    what = {"version": version("detect-secrets"), "settings": settings_json, "excluded": EXCLUDED_FILES, "format": 1}
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"history-{key}.json"


def scan_history(repo: Path, processes: int | None = None, cache_dir: Path | None = None) -> list[Finding]:
    """Every secret detect-secrets finds in a line some commit added, minus ALLOWED_VALUES.

    With `cache_dir`, commits scanned by an earlier run (same scanner and settings) are not scanned
    again: a second run costs the `git log` only.
    """
    from detect_secrets.settings import default_settings

    with default_settings() as settings:
        cache = _cache_file(cache_dir, settings.json()) if cache_dir is not None else None
        known: dict[str, list[list[str]]] = json.loads(cache.read_text()) if cache and cache.is_file() else {}
        history = added_lines(repo, skip=known.keys())
        fresh = _scan(history.lines, processes)
    for sha in history.commits:
        if sha not in known:
            known[sha] = fresh.get(sha, [])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(cache)
    allowed = {_digest(value) for value in ALLOWED_VALUES}
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for sha in history.commits:
        for path, kind, line, digest in known[sha]:
            if digest not in allowed:
                grouped.setdefault((path, kind, line), []).append(sha)
    return [Finding(path, kind, tuple(shas), line) for (path, kind, line), shas in grouped.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.security.history", description=__doc__.split("\n")[0])
    parser.add_argument("repo", nargs="?", type=Path, default=Path.cwd(), help="a git repository (default: here)")
    args = parser.parse_args(argv)
    commits = subprocess.run(
        ["git", "-C", str(args.repo), "rev-list", "--all", "--count"], capture_output=True, text=True, check=True
    ).stdout.strip()
    from pipelines.config import load_settings

    findings = scan_history(args.repo, cache_dir=load_settings().state_dir / "security")
    for f in findings:
        print(f.describe())
    excluded = ", ".join(EXCLUDED_FILES)
    print(f"history: {commits} commits of every ref scanned ({excluded} excluded): {len(findings)} secret(s) found")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
