"""The settings the rolling-origin backtests chose, read from model/selection.json.

`sluice backtest --write-selection` rewrites that file from a backtest run; training reads it for
its defaults and records its `id` (and figures) on every model it registers, so each version says
which backtests chose its rounds and settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SELECTION_FILE = Path(__file__).with_name("selection.json")


@dataclass(frozen=True)
class Selection:
    id: str  # e.g. "backtest-2026-11-30-<data fingerprint>": names the run that chose the settings
    config: dict[str, Any]  # TrainConfig fields the backtests chose
    windows: list[str]  # the backtest windows, "start..end"
    rmspe_mean: float
    rmspe_std: float
    per_window: dict[str, float] = field(default_factory=dict)
    data: str = ""  # what data the backtests ran on
    command: str = ""

    def tags(self) -> dict[str, str]:
        """What a registered version records about the backtests that chose its settings."""
        return {
            "selection.id": self.id,
            "selection.windows": ",".join(self.windows),
            "selection.rmspe_mean": f"{self.rmspe_mean:.5f}",
            "selection.rmspe_std": f"{self.rmspe_std:.5f}",
        }

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


def selection_id(day: str, data_fingerprint: str, config: dict[str, Any], per_window: dict[str, float]) -> str:
    """`backtest-<day>-<data>-<digest of the settings and figures>`: one id per backtest result."""
    digest = hashlib.sha256(json.dumps([config, per_window], sort_keys=True).encode()).hexdigest()
    return f"backtest-{day}-{data_fingerprint[:8]}-{digest[:6]}"


def load_selection(path: Path = SELECTION_FILE) -> Selection:
    return Selection(**json.loads(path.read_text()))


SELECTION = load_selection()
