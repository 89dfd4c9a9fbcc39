"""The cluster stack's version pins against the upstream facts in terraform/cluster/compatibility.yaml.

A wrong pin (a node image Knative refuses, a provider embedding another kind than the node image's,
a Knative outside what KServe is built against) fails here in a second, not 15 minutes into a user's
first `terraform apply`. The pins are read from the .tf files with python-hcl2 (and the kind CLI
from the kind-e2e workflow); each rule is checked again on a copy with one deliberately wrong pin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "terraform" / "cluster"
WORKFLOW = ROOT / ".github" / "workflows" / "kind-e2e.yml"
FACTS = yaml.safe_load((CLUSTER / "compatibility.yaml").read_text())


@dataclass(frozen=True)
class Pins:
    kind_provider: str
    node_image: str
    kserve: str
    knative_serving: str
    knative_operator: str
    cert_manager: str
    prometheus_chart: str
    kind_cli: str | None  # the kind the e2e workflow installs


def _unquote(value: Any) -> Any:
    """python-hcl2 >= 7 keeps the quotes of strings and adds __bookkeeping__ keys."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def read_pins(cluster: Path, workflow: Path | None) -> Pins:
    variables: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    for path in sorted(cluster.glob("*.tf")):
        with path.open() as fh:
            doc = _unquote(hcl2.load(fh))
        for block in doc.get("variable", []):
            variables.update({name: spec.get("default") for name, spec in block.items()})
        for terraform in doc.get("terraform", []):
            for entry in terraform.get("required_providers", []):
                providers.update(entry)
    kind_cli = None
    if workflow is not None:
        doc = yaml.safe_load(workflow.read_text())
        steps = [s for job in doc["jobs"].values() for s in job.get("steps", [])]
        found = {str(s["env"]["KIND_VERSION"]) for s in steps if "KIND_VERSION" in s.get("env", {})}
        kind_cli = found.pop() if len(found) == 1 else None
    return Pins(
        kind_provider=providers["kind"]["version"],
        node_image=variables["node_image"],
        kserve=variables["kserve_version"],
        knative_serving=variables["knative_serving_version"],
        knative_operator=variables["knative_operator_version"],
        cert_manager=variables["cert_manager_version"],
        prometheus_chart=variables["prometheus_chart_version"],
        kind_cli=kind_cli,
    )


def _version(text: str) -> tuple[int, ...]:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(x or 0) for x in match.groups())


def _minor(text: str) -> str:
    major, minor, _ = _version(text)
    return f"{major}.{minor}"


def violations(pins: Pins, facts: dict[str, Any]) -> list[str]:
    """Every way the pins contradict the facts; empty when they agree."""
    out: list[str] = []

    # tehcyx/kind provider -> the kind it embeds -> that kind's node image.
    provider = re.fullmatch(r"=?\s*(\d+\.\d+\.\d+)", pins.kind_provider.strip())
    kind = None
    if not provider:
        out.append(
            f"kind provider {pins.kind_provider!r} is a range: it may resolve to a release embedding another "
            "kind than the node image's; pin one release"
        )
    elif provider.group(1) not in facts["kind_provider"]:
        out.append(f"kind provider {provider.group(1)} is not in compatibility.yaml (which kind does it embed?)")
    else:
        kind = facts["kind_provider"][provider.group(1)]["kind"]
    if kind is not None:
        expected = facts["kind_node_image"].get(kind, {}).get("image")
        if pins.node_image != expected:
            out.append(
                f"node_image {pins.node_image} is not the default image of kind {kind} "
                f"(embedded by kind provider {provider.group(1) if provider else '?'}): {expected}"
            )
        if pins.kind_cli is not None and pins.kind_cli != kind:
            out.append(f"the kind-e2e workflow installs kind {pins.kind_cli}, the provider embeds kind {kind}")
    if pins.kind_cli is None:
        out.append("the kind-e2e workflow does not pin one kind CLI version (a step's env KIND_VERSION)")

    image = re.fullmatch(r"kindest/node:v(\d+\.\d+\.\d+)@sha256:[0-9a-f]{64}", pins.node_image)
    if not image:
        out.append(f"node_image {pins.node_image} is not a kindest/node image pinned by digest")
        return out
    kubernetes = _version(image.group(1))

    # Knative Serving -> minimum Kubernetes.
    knative = _minor(pins.knative_serving)
    minimum = facts["knative_kubernetes_minimum"].get(knative)
    if minimum is None:
        out.append(f"knative_serving_version {pins.knative_serving}: its minimum Kubernetes is not recorded")
    elif kubernetes < _version(minimum["kubernetes"]):
        out.append(
            f"node_image runs Kubernetes {image.group(1)}, Knative Serving {knative} needs >= "
            f"{minimum['kubernetes']} ({minimum['source']})"
        )
    if _minor(pins.knative_operator) != knative:
        out.append(f"knative_operator_version {pins.knative_operator} does not install Knative Serving {knative}")

    # KServe -> the Knative, operator and cert-manager it is built and tested with.
    kserve = facts["kserve"].get(_minor(pins.kserve))
    if kserve is None:
        out.append(f"kserve_version {pins.kserve} is not in compatibility.yaml")
    else:
        if pins.kserve != kserve["chart_version"]:
            out.append(f"kserve_version {pins.kserve} is not the recorded chart version {kserve['chart_version']}")
        if knative not in kserve["knative_serving"]:
            out.append(f"Knative Serving {knative} is outside KServe {pins.kserve}'s {kserve['knative_serving']}")
        if pins.knative_operator != kserve["knative_operator"]:
            out.append(f"knative_operator_version {pins.knative_operator} != KServe's {kserve['knative_operator']}")
        if pins.cert_manager != kserve["cert_manager"]:
            out.append(f"cert_manager_version {pins.cert_manager} != KServe's {kserve['cert_manager']}")

    prometheus = facts["prometheus_chart"].get(pins.prometheus_chart)
    if prometheus is None:
        out.append(f"prometheus_chart_version {pins.prometheus_chart} is not in compatibility.yaml")
    elif kubernetes < _version(prometheus["kubernetes_min"]):
        out.append(f"prometheus chart {pins.prometheus_chart} needs Kubernetes >= {prometheus['kubernetes_min']}")
    return out


# ---- the repository's pins --------------------------------------------------------------------
def test_every_fact_names_its_source() -> None:
    for section in ("knative_kubernetes_minimum", "kserve", "kind_node_image", "kind_provider", "prometheus_chart"):
        assert FACTS[section], section
        for key, fact in FACTS[section].items():
            assert isinstance(fact, dict) and fact.get("source"), f"{section}.{key} has no source"


def test_the_pins_agree_with_the_upstream_facts() -> None:
    pins = read_pins(CLUSTER, WORKFLOW)
    assert violations(pins, FACTS) == []


def test_the_pins_are_the_ones_this_stack_was_checked_with() -> None:
    """Spelled out once, so a reader sees the chain: provider -> kind -> node image -> Kubernetes."""
    pins = read_pins(CLUSTER, WORKFLOW)
    assert pins.kind_provider == "0.10.0"
    assert FACTS["kind_provider"]["0.10.0"]["kind"] == pins.kind_cli == "v0.30.0"
    assert pins.node_image.startswith("kindest/node:v1.34.0@sha256:7416a61b")
    assert (pins.knative_serving, pins.knative_operator, pins.kserve) == ("1.21", "v1.21.1", "v0.20.0")


# ---- a deliberately wrong pin fails ----------------------------------------------------------
OLD_IMAGE = FACTS["kind_node_image"]["v0.27.0"]["image"]  # Kubernetes 1.32.2: Knative 1.21 refuses it
IMAGE_V031 = FACTS["kind_node_image"]["v0.31.0"]["image"]

WRONG_PINS = {
    "node image of kind v0.27 (Kubernetes 1.32)": (
        "variables.tf",
        FACTS["kind_node_image"]["v0.30.0"]["image"],
        OLD_IMAGE,
        ["is not the default image of kind v0.30.0", "Knative Serving 1.21 needs >= 1.33.0"],
    ),
    "provider as a range": ("versions.tf", 'version = "0.10.0"', 'version = "~> 0.9"', ["is a range"]),
    "provider embedding kind v0.31": (
        "versions.tf",
        'version = "0.10.0"',
        'version = "0.11.0"',
        ["is not the default image of kind v0.31.0", "installs kind v0.30.0, the provider embeds kind v0.31.0"],
    ),
    "node image of a newer kind": (
        "variables.tf",
        FACTS["kind_node_image"]["v0.30.0"]["image"],
        IMAGE_V031,
        ["is not the default image of kind v0.30.0"],
    ),
    "Knative Serving 1.22": (
        "variables.tf",
        'default     = "1.21"',
        'default     = "1.22"',
        ["outside KServe", "does not install Knative Serving 1.22"],
    ),
    "cert-manager not KServe's": ("variables.tf", '"v1.17.0"', '"v1.18.2"', ["cert_manager_version v1.18.2"]),
    "unknown KServe": ("variables.tf", 'default     = "v0.20.0"', 'default     = "v0.21.0"', ["v0.21.0 is not in"]),
    "unrecorded prometheus chart": ("variables.tf", '"29.27.0"', '"27.0.0"', ["prometheus_chart_version 27.0.0"]),
}


@pytest.mark.parametrize(("file", "old", "new", "expected"), WRONG_PINS.values(), ids=WRONG_PINS.keys())
def test_a_wrong_pin_is_named(file: str, old: str, new: str, expected: list[str], tmp_path: Path) -> None:
    copy = tmp_path / "cluster"
    copy.mkdir()
    for path in CLUSTER.glob("*.tf"):
        shutil.copy(path, copy / path.name)
    text = (copy / file).read_text()
    assert text.count(old) == 1, f"{old!r} is not pinned once in {file}"
    (copy / file).write_text(text.replace(old, new))
    found = violations(read_pins(copy, WORKFLOW), FACTS)
    for fragment in expected:
        assert any(fragment in v for v in found), (fragment, found)


def test_a_workflow_installing_another_kind_fails(tmp_path: Path) -> None:
    workflow = tmp_path / "kind-e2e.yml"
    text = WORKFLOW.read_text()
    assert text.count("KIND_VERSION: v0.30.0") == 1
    workflow.write_text(text.replace("KIND_VERSION: v0.30.0", "KIND_VERSION: v0.29.0"))
    found = violations(read_pins(CLUSTER, workflow), FACTS)
    assert any("installs kind v0.29.0" in v for v in found), found


# ---- terraform's own validation refuses a node image Knative refuses ---------------------------
def _console(module: Path, expression: str, **variables: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("terraform")
    if not exe:
        pytest.skip("terraform is not installed")
    args = [exe, "console", "-no-color", *(f"-var={k}={v}" for k, v in variables.items())]
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        args, input=expression + "\n", capture_output=True, text=True, cwd=module, env=env, timeout=120
    )


def test_terraform_validation_refuses_kubernetes_older_than_1_33(tmp_path: Path) -> None:
    shutil.copy(CLUSTER / "variables.tf", tmp_path / "variables.tf")
    ok = _console(tmp_path, "var.node_image")
    assert ok.returncode == 0, ok.stderr
    assert "v1.34.0" in ok.stdout
    refused = _console(tmp_path, "var.node_image", node_image=OLD_IMAGE)
    # `terraform console` reports the failed validation rule (plan and apply stop on it).
    assert "Invalid value for variable" in refused.stderr, refused.stderr
    assert "Kubernetes v1.33 or newer" in refused.stderr
