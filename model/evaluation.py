"""The evaluation gate: score two registered versions on the same window, record the verdict.

`sluice ci check` and `sluice ci promote` read the verdict tags this writes on the candidate version.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from model.data import RawData, fingerprint
from model.metrics import rmse, rmspe
from model.registry import resolve_version
from model.schema import INPUT_COLUMNS

log = logging.getLogger(__name__)

VERDICT_TAG = "gate.verdict"


@dataclass(frozen=True)
class Verdict:
    model: str
    candidate: str
    baseline: str  # the baseline's version number, or "" when there was none
    candidate_rmspe: float
    baseline_rmspe: float | None
    tolerance: float
    window: str
    passed: bool
    reason: str

    def tags(self) -> dict[str, str]:
        return {
            VERDICT_TAG: "pass" if self.passed else "fail",
            "gate.baseline_version": self.baseline or "none",
            "gate.candidate_rmspe": f"{self.candidate_rmspe:.5f}",
            "gate.baseline_rmspe": "" if self.baseline_rmspe is None else f"{self.baseline_rmspe:.5f}",
            "gate.tolerance": str(self.tolerance),
            "gate.window": self.window,
            "gate.reason": self.reason,
            "gate.evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def window_rows(raw: RawData, start: str, end: str) -> pd.DataFrame:
    rows = raw.train[(raw.train["Date"] >= start) & (raw.train["Date"] <= end)]
    if rows.empty:
        raise ValueError(
            f"the data ({raw.first_date.date()}..{raw.last_date.date()}) has no rows in the evaluation window "
            f"{start}..{end}: evaluate on the data the candidate was trained on (see its data.source tag)"
        )
    return rows


def score(model_uri: str, rows: pd.DataFrame) -> dict[str, float]:
    model = mlflow.pyfunc.load_model(model_uri)
    request = rows[INPUT_COLUMNS].assign(Date=rows["Date"].dt.strftime("%Y-%m-%d"))
    pred = np.asarray(model.predict(request), dtype="float64")
    truth = rows["Sales"].to_numpy(dtype="float64")
    return {"rmspe": rmspe(truth, pred), "rmse": rmse(truth, pred)}


def evaluate(
    client: MlflowClient,
    name: str,
    candidate: str,
    baseline_ref: str,
    raw: RawData,
    tolerance: float = 0.02,
    record: bool = True,
) -> Verdict:
    """Compare `candidate` with `baseline_ref` (version or alias) on the candidate's validation window.

    Pass when candidate RMSPE <= baseline RMSPE * (1 + tolerance). A missing baseline alias (the
    first release) passes. The verdict is written as `gate.*` tags on the candidate version.
    """
    cand = resolve_version(client, name, candidate)
    start, end = cand.tags.get("data.valid_start"), cand.tags.get("data.valid_end")
    if not start or not end:
        raise ValueError(f"version {cand.version} has no data.valid_start/valid_end tags: was it trained by sluice?")
    if cand.tags.get("data.fingerprint") not in (None, fingerprint(raw)):
        log.warning(
            "evaluating on data that differs from what trained version %s (fingerprint %s)",
            cand.version,
            cand.tags.get("data.fingerprint"),
        )
    rows = window_rows(raw, start, end)
    log.info("scoring candidate v%s on %s..%s (%s rows)", cand.version, start, end, f"{len(rows):,}")
    cand_scores = score(f"models:/{name}/{cand.version}", rows)
    try:
        base = resolve_version(client, name, baseline_ref)
    except LookupError as exc:
        if baseline_ref.isdigit():
            raise
        base = None
        log.info("%s: no baseline, the candidate passes as the first release", exc)
    if base is None or base.version == cand.version:
        verdict = Verdict(
            name,
            cand.version,
            "",
            cand_scores["rmspe"],
            None,
            tolerance,
            f"{start}..{end}",
            True,
            f"no baseline behind {baseline_ref!r}" if base is None else "baseline is the candidate",
        )
    else:
        log.info("scoring baseline v%s on the same rows", base.version)
        base_scores = score(f"models:/{name}/{base.version}", rows)
        limit = base_scores["rmspe"] * (1 + tolerance)
        passed = cand_scores["rmspe"] <= limit
        reason = (
            f"candidate RMSPE {cand_scores['rmspe']:.4f} {'<=' if passed else '>'} baseline v{base.version} "
            f"RMSPE {base_scores['rmspe']:.4f} x (1 + {tolerance})"
        )
        verdict = Verdict(
            name,
            cand.version,
            base.version,
            cand_scores["rmspe"],
            base_scores["rmspe"],
            tolerance,
            f"{start}..{end}",
            passed,
            reason,
        )
    if record:
        for key, value in verdict.tags().items():
            client.set_model_version_tag(name, cand.version, key, value)
    return verdict


def verdict_dict(verdict: Verdict) -> dict[str, object]:
    return asdict(verdict)
