"""Which registered model version a model directory holds.

An MLflow model directory does not record its registry version, so whoever downloads it says so:
`sluice serve` writes `sluice.json` next to the files it downloads; in the cluster the
InferenceService sets SLUICE_MODEL_VERSION (or passes --model-version). Unknown stays "unknown".
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PROVENANCE_FILE = "sluice.json"
VERSION_ENV = "SLUICE_MODEL_VERSION"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Provenance:
    name: str
    version: str
    source_uri: str


def write_provenance(model_dir: Path, provenance: Provenance) -> None:
    (model_dir / PROVENANCE_FILE).write_text(json.dumps(asdict(provenance), indent=2) + "\n")


def read_provenance(model_dir: Path) -> Provenance | None:
    path = model_dir / PROVENANCE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Provenance(str(data.get("name", "")), str(data.get("version", UNKNOWN)), str(data.get("source_uri", "")))


def resolve_version(model_dir: Path, explicit: str | None = None) -> str:
    """--model-version, else $SLUICE_MODEL_VERSION, else sluice.json, else "unknown"."""
    if explicit:
        return explicit
    if os.environ.get(VERSION_ENV):
        return os.environ[VERSION_ENV]
    provenance = read_provenance(model_dir)
    return provenance.version if provenance and provenance.version else UNKNOWN
