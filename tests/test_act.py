"""The local CI runner's use of act: which workflows a push runs, a stand-in for every `uses:`, and
every workflow valid for act itself. (act runs the workflows for real in the end-to-end tests.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines.platform import act

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = act.load_workflows(ROOT / ".github" / "workflows")
BY_NAME = {w.name: w for w in WORKFLOWS}


def test_the_workflows_are_there() -> None:
    assert {"promote", "rollout", "sync", "check", "ci", "kind-e2e"} <= set(BY_NAME)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("gitops/models/*/release.yaml", "gitops/models/rossmann/release.yaml", True),
        ("gitops/models/*/release.yaml", "gitops/models/a/b/release.yaml", False),
        ("gitops/models/**", "gitops/models/a/b/status.yaml", True),
        ("gitops/**", "gitops", False),
        ("*.md", "docs/x.md", False),
        ("**.md", "docs/x.md", True),
    ],
)
def test_github_glob_rules(pattern: str, path: str, matches: bool) -> None:
    assert act.glob_match(pattern, path) is matches


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["gitops/models/rossmann/release.yaml"], {"promote"}),
        (["gitops/models/rossmann/status.yaml"], set()),
        (["gitops/models/rossmann/release.yaml", "README.md"], {"promote", "ci"}),
        (["tests/test_decide.py"], {"ci"}),
        (["pipelines/cli.py"], {"ci", "image"}),
        (["serving/model.py"], {"ci", "image"}),
        (None, {"promote", "ci", "image"}),
    ],
    ids=["a release", "CI's own files only", "release and code", "tests", "code", "the runtime", "a new branch"],
)
def test_a_push_runs_the_workflows_its_filters_select(changed: list[str] | None, expected: set[str]) -> None:
    chosen = {w.name for w in WORKFLOWS if act.push_selects(w, "main", changed)}
    assert chosen == expected
    assert not any(
        act.push_selects(w, "feature", ["gitops/models/m/release.yaml"]) for w in WORKFLOWS if w.name == "promote"
    )


def test_every_uses_has_a_stand_in_and_a_new_one_fails(tmp_path: Path) -> None:
    args = act.standins_for(WORKFLOWS)
    assert len(args) == 2 * len({u for w in WORKFLOWS for u in w.uses})
    bogus = tmp_path / "x.yml"
    bogus.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: aws-actions/configure-aws-credentials@v4\n"
    )
    with pytest.raises(act.ActError, match="no local stand-in for aws-actions/configure-aws-credentials@v4"):
        act.standins_for(act.load_workflows(tmp_path))


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_act_validates_the_workflow(name: str) -> None:
    proc = subprocess.run(
        [act.act_binary(), "--validate", "-W", str(BY_NAME[name].path)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0 and "Validation Error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_act_refuses_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n        bogus: 1\n"
    )
    proc = subprocess.run([act.act_binary(), "--validate", "-W", str(bad)], capture_output=True, text=True)
    assert "Validation Error" in proc.stdout + proc.stderr


def test_every_standin_is_a_valid_action_file() -> None:
    """act reads a stand-in when its job starts, even for a step it then skips: one YAML error fails the job."""
    import yaml

    files = sorted(act.STANDINS.rglob("action.yml"))
    assert files
    for path in files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["runs"]["using"] == "composite", path
