"""No secret value anywhere in the Git history: detect-secrets over every line any commit added.

A secret committed once and deleted in the next commit is still in every clone, so scanning the
working tree is not enough. `git log --all -p --unified=0` lists what each commit of every ref
added (merges as combined diffs, so a line a merge itself introduced counts too); the added lines
of each path, deduplicated, are written to a temporary file named like the original (detect-secrets
picks its keyword patterns by file type) and scanned with detect-secrets' own file scanner, every
plugin and its default heuristic filters on. Line N of a scanned file maps back to the commits that
added that line.

Exclusions and the allowlist live here and nowhere else; each says why.

    python -m pipelines.security.history [REPO]      # exit 1 and a list when something is found
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def added_lines(repo: Path) -> dict[str, dict[str, list[str]]]:
    """{path: {added line: [commits that added it, oldest first]}} over every commit of every ref.

    In a merge's combined diff a line carries one marker column per parent; it is new in the merge
    only when every column says `+` (otherwise it came from a parent, whose commit is scanned anyway).
    """
    found: dict[str, dict[str, list[str]]] = {}
    sha, columns, path, in_header = "", 1, None, False
    for line in _git_log(repo).split("\n"):
        # Within a hunk every line starts with a marker column (+, - or space), so "commit " and
        # "diff " are headers there; "+++ " and "@@" only count in a file header (an added line
        # may well read "++ x").
        if line.startswith("commit "):
            sha, *parents = line[len("commit ") :].split()
            columns, path, in_header = max(len(parents), 1), None, False
        elif line.startswith("diff "):
            path, in_header = None, True
        elif in_header:
            if line.startswith("+++ "):
                path = _target_path(line)
            elif line.startswith("@@"):
                in_header = False
        elif path is not None and line[:columns] == "+" * columns:
            text = line[columns:].replace("\r", " ")  # one scanned line per added line
            commits = found.setdefault(path, {}).setdefault(text, [])
            if sha not in commits:
                commits.append(sha)
    return found


def _mask(line: str, secret: str | None) -> str:
    if not secret:
        return line
    return line.replace(secret, secret[:4] + "*" * max(len(secret) - 4, 3))


def scan_history(repo: Path, processes: int | None = None) -> list[Finding]:
    """Every secret detect-secrets finds in a line some commit added, minus ALLOWED_VALUES."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    lines = added_lines(repo)
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="sluice-secrets-") as tmp:
        root = Path(tmp)
        for path, added in lines.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(f"{text}\n" for text in added), encoding="utf-8")
        collection = SecretsCollection(root=tmp)
        with default_settings():
            collection.scan_files(*lines, num_processors=processes)
        for path in sorted(collection.files):
            texts = list(lines[path])
            for secret in sorted(collection[path], key=lambda s: s.line_number):
                if secret.secret_value in ALLOWED_VALUES:
                    continue
                text = texts[secret.line_number - 1]
                commits = tuple(lines[path][text])
                findings.append(Finding(path, secret.type, commits, _mask(text, secret.secret_value)))
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.security.history", description=__doc__.split("\n")[0])
    parser.add_argument("repo", nargs="?", type=Path, default=Path.cwd(), help="a git repository (default: here)")
    args = parser.parse_args(argv)
    commits = subprocess.run(
        ["git", "-C", str(args.repo), "rev-list", "--all", "--count"], capture_output=True, text=True, check=True
    ).stdout.strip()
    findings = scan_history(args.repo)
    for f in findings:
        print(f.describe())
    excluded = ", ".join(EXCLUDED_FILES)
    print(f"history: {commits} commits of every ref scanned ({excluded} excluded): {len(findings)} secret(s) found")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
