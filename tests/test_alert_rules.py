"""The PrometheusRule's rules and alerts, checked and unit-tested by Prometheus' own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.platform.prometheus import RULES_SOURCE, rule_groups

FIXTURE = Path(__file__).parent / "fixtures" / "alert_rules_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool comes with Debian's prometheus (make setup)")


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups(RULES_SOURCE)}))
    (tmp_path / "test.yml").write_text(FIXTURE.read_text())
    return tmp_path


def test_the_rule_groups_are_the_manifests_spec() -> None:
    doc = yaml.safe_load(RULES_SOURCE.read_text())
    assert doc["kind"] == "PrometheusRule" and rule_groups() == doc["spec"]["groups"]
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert {"SluiceServerErrors", "SluiceSlowP95", "SluiceNoTraffic", "SluiceCanaryStuck"} <= alerts
    assert {
        "SluiceDrift",
        "SluiceDriftCheckStale",
        "SluiceRealizedAccuracyLow",
        "SluiceVersionWorseOnSameStoreDays",
    } <= alerts


@needs_promtool
def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules_dir / "rules.yml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alerts(rules_dir: Path) -> None:
    proc = subprocess.run([str(PROMTOOL), "test", "rules", "test.yml"], capture_output=True, text=True, cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
