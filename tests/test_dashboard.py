"""The Grafana dashboard ConfigMap: its structure, its queries parsed by promtool, and every series it
reads produced by Sluice (the runtime, the recording rules, the drift and feedback pushes).

Grafana does not run here: this is a static check of what Grafana would load.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.monitoring import export
from pipelines.platform.prometheus import rule_groups
from serving.metrics import ServingMetrics

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "gitops" / "platform" / "grafana-dashboard.yaml"
PROMTOOL = shutil.which("promtool")
PANELS_WANTED = {
    "Traffic share per revision",
    "Request rate",
    "Error rate (5xx share)",
    "Latency p50 / p95",
    "Mean prediction",
    "Drift (last sluice drift check per version)",
    "Realized RMSPE (sluice feedback)",
}


def dashboard() -> dict[str, Any]:
    doc = yaml.safe_load(MANIFEST.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "ConfigMap")
    assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar looks for
    (name,) = doc["data"]
    assert name.endswith(".json")
    return dict(json.loads(doc["data"][name]))


def queries(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    assert {p["title"] for p in panels} == PANELS_WANTED
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(set(refs)) == len(refs) and all(t["expr"] for t in p["targets"])
    # Every variable a query or datasource uses is defined.
    defined = {v["name"] for v in dash["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)\}?", json.dumps(panels)))
    assert used <= defined, used - defined


def _known_series() -> set[str]:
    metrics = ServingMetrics()
    bound = metrics.bind("m", "1")
    bound.observe_request("ok", 0.01)
    bound.observe_predictions(np.array([1.0]))
    registries = [
        metrics.registry,
        export.drift_registry("m", "1", export.DriftFigures(0.1, 0.0, 0.0, False, 1, {"Store": 0.1}), 0.0),
        export.feedback_registry("m", "1", export.FeedbackFigures(0.1, 1, 0.1, 1, "r"), 0.0),
    ]
    names = {
        s.name
        for r in registries
        for f in text_string_to_metric_families(generate_latest(r).decode())
        for s in f.samples
    }
    return names | {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def test_every_series_the_dashboard_reads_is_produced() -> None:
    known = _known_series()
    functions = {"sum", "by", "rate", "scalar", "histogram_quantile", "max", "le", "revision", "version", "outcome"}
    for expr in queries(dashboard()):
        bare = re.sub(r"\{[^}]*\}|\[[^]]*\]|\"[^\"]*\"", "", expr)
        names = {n for n in re.findall(r"[a-zA-Z_:][\w:]*", bare) if n not in functions}
        assert names <= known, f"{expr}: {names - known} is produced by nothing in Sluice"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool comes with Debian's prometheus (make setup)")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query{i}", "expr": q.replace("$model", "m")} for i, q in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A broken query is caught.
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "x", "expr": "sum by (a (b)"}]}]}))
    assert subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True).returncode != 0
