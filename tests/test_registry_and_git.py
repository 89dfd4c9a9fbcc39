"""The one registry client and the git helpers, against a real MLflow server and real repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.gitops import git
from pipelines.registry import RegistryError, RestRegistry


@pytest.mark.integration
def test_a_failed_registry_write_is_an_error_never_done(platform: Settings) -> None:
    registry = RestRegistry(platform.tracking_uri)
    with pytest.raises(RegistryError, match="failed"):
        registry.set_alias("no-such-model", "champion", "1")
    with pytest.raises(RegistryError, match="failed"):
        registry.set_tag("no-such-model", "1", "k", "v")
    # Lookups of things that do not exist are None, not errors.
    assert registry.get_version("no-such-model", "1") is None
    assert registry.aliases("no-such-model") is None
    # A bare 404 (wrong path, a proxy) is not "does not exist": it is an error.
    wrong = RestRegistry(platform.tracking_uri + "/not-mlflow")
    with pytest.raises(RegistryError):
        wrong.get_version("m", "1")


def _commit(repo: Path, model: str, n: int) -> None:
    (repo / f"f{n}").write_text(str(n))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    msg = f"c{n}\n\nSluice-Model: {model}\nSluice-Action: release\n"
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", msg], cwd=repo, check=True)


def test_sluice_log_matches_the_whole_model_name_before_counting(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _commit(tmp_path, "rossmann", 1)
    for n in range(2, 7):
        _commit(tmp_path, "rossmann-eu", n)
    found = git.sluice_log(tmp_path, "rossmann", max_count=1)
    assert [e.get("Model") for e in found] == ["rossmann"]  # not empty, not rossmann-eu
    assert len(git.sluice_log(tmp_path, "rossmann-eu")) == 5
