"""The evaluation gate: score two registered versions on days neither was fitted on, record the verdict.

A registered model is refit on all its data, so no day of that data is unseen by it. What the gate
scores instead is each version's holdout model, logged with it (run artifacts under `holdout/`):
the same settings fitted on the data before the version's holdout window (model/training.py), with
rounds fixed by backtests that leave the holdout out. Both are scored on the days of the given data
from the later of the two holdout starts on: days neither model was fitted, early-stopped or tuned
on. A version logged before holdout models existed is scored through its registered model, which
was then itself fitted only before its validation window.

`sluice ci check` and `sluice ci promote` read the verdict tags this writes on the candidate version.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from model.data import RawData, fingerprint
from model.forecaster import Forecaster
from model.inputs import Requests
from model.metrics import rmse, rmspe
from model.registry import HOLDOUT_ARTIFACTS, HOLDOUT_TAG, resolve_version
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


Predict = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    predict: Predict
    kind: str  # which model scores: the holdout model or the registered one
    stores: frozenset[int] | None  # the store ids it knows; None when the model does not say


def holdout_predictor(client: MlflowClient, mv: ModelVersion) -> Predictor:
    """The version's holdout model, or (logged before those existed) its registered model."""
    if mv.tags.get(HOLDOUT_TAG) == HOLDOUT_ARTIFACTS:
        with tempfile.TemporaryDirectory(prefix="sluice-holdout-") as folder:  # loaded into memory
            path = client.download_artifacts(str(mv.run_id), HOLDOUT_ARTIFACTS, folder)
            forecaster = Forecaster.load_dir(Path(path))
        stores = frozenset(int(s) for s in forecaster.tables.store_ids)
        return Predictor(lambda rows: forecaster.predict(Requests.from_frame(rows)), "holdout model", stores)
    model = mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}")

    def predict(rows: pd.DataFrame) -> np.ndarray:
        request = rows[INPUT_COLUMNS].assign(Date=rows["Date"].dt.strftime("%Y-%m-%d"))
        return np.asarray(model.predict(request), dtype="float64")

    return Predictor(predict, "registered model, logged before holdout models", None)


def common_rows(rows: pd.DataFrame, *predictors: Predictor) -> tuple[pd.DataFrame, str]:
    """The rows of stores every predictor knows, and a note when some were left out.

    A champion trained before new stores opened cannot forecast them; comparing on the stores both
    know keeps the gate a like-for-like comparison instead of a crash.
    """
    known = [p.stores for p in predictors if p.stores is not None]
    if not known:
        return rows, ""
    common = frozenset.intersection(*known)
    kept = rows[rows["Store"].isin(common)]
    left_out = int(rows["Store"].nunique() - kept["Store"].nunique())
    return kept, (f", on the {kept['Store'].nunique()} stores both know ({left_out} left out)" if left_out else "")


def score(predict: Predict, rows: pd.DataFrame) -> dict[str, float]:
    pred = predict(rows)
    truth = rows["Sales"].to_numpy(dtype="float64")
    return {"rmspe": rmspe(truth, pred), "rmse": rmse(truth, pred)}


def _holdout_start(mv: ModelVersion) -> str:
    start = mv.tags.get("data.valid_start")
    if not start:
        raise ValueError(f"version {mv.version} has no data.valid_start tag: was it trained by sluice?")
    return start


def evaluate(
    client: MlflowClient,
    name: str,
    candidate: str,
    baseline_ref: str,
    raw: RawData,
    tolerance: float = 0.02,
    record: bool = True,
) -> Verdict:
    """Compare `candidate` with `baseline_ref` (version or alias) on days neither was fitted on.

    The window runs from the later of the two versions' holdout starts (`data.valid_start`) to the
    end of `raw`. Pass when candidate RMSPE <= baseline RMSPE * (1 + tolerance). A missing baseline
    alias (the first release) passes. The verdict is written as `gate.*` tags on the candidate.
    """
    cand = resolve_version(client, name, candidate)
    if cand.tags.get("data.fingerprint") not in (None, fingerprint(raw)):
        log.warning(
            "evaluating on data that differs from what trained version %s (fingerprint %s)",
            cand.version,
            cand.tags.get("data.fingerprint"),
        )
    try:
        base: ModelVersion | None = resolve_version(client, name, baseline_ref)
    except LookupError as exc:
        if baseline_ref.isdigit():
            raise
        base = None
        log.info("%s: no baseline, the candidate passes as the first release", exc)
    same = base is not None and base.version == cand.version
    if same:
        base = None
    start = max(_holdout_start(cand), _holdout_start(base) if base is not None else "")
    end = str(raw.last_date.date())
    rows = window_rows(raw, start, end)
    window = f"{start}..{end}"
    cand_predictor = holdout_predictor(client, cand)
    if base is None:
        log.info("scoring candidate v%s (%s) on %s (%s rows)", cand.version, cand_predictor.kind, window, len(rows))
        cand_scores = score(cand_predictor.predict, rows)
        why = "baseline is the candidate" if same else f"no baseline behind {baseline_ref!r}"
        verdict = Verdict(name, cand.version, "", cand_scores["rmspe"], None, tolerance, window, True, why)
    else:
        base_predictor = holdout_predictor(client, base)
        rows, scope = common_rows(rows, cand_predictor, base_predictor)
        if rows.empty:
            reason = (
                f"candidate v{cand.version} and baseline v{base.version} know no store in common on {window}: "
                f"nothing to compare them on; to release v{cand.version} anyway, name it in the release file"
            )
            verdict = Verdict(name, cand.version, base.version, float("nan"), None, tolerance, window, False, reason)
            if record:
                for key, value in verdict.tags().items():
                    client.set_model_version_tag(name, cand.version, key, value)
            return verdict
        log.info(
            "scoring candidate v%s (%s) and baseline v%s (%s) on %s (%s rows%s)",
            cand.version, cand_predictor.kind, base.version, base_predictor.kind, window, f"{len(rows):,}", scope,
        )  # fmt: skip
        cand_scores = score(cand_predictor.predict, rows)
        base_scores = score(base_predictor.predict, rows)
        limit = base_scores["rmspe"] * (1 + tolerance)
        passed = cand_scores["rmspe"] <= limit
        reason = (
            f"candidate RMSPE {cand_scores['rmspe']:.4f} {'<=' if passed else '>'} baseline v{base.version} "
            f"RMSPE {base_scores['rmspe']:.4f} x (1 + {tolerance}) on {window}{scope}, days neither was fitted on"
        )
        verdict = Verdict(
            name,
            cand.version,
            base.version,
            cand_scores["rmspe"],
            base_scores["rmspe"],
            tolerance,
            window,
            passed,
            reason,
        )
    if record:
        for key, value in verdict.tags().items():
            client.set_model_version_tag(name, cand.version, key, value)
    return verdict


def verdict_dict(verdict: Verdict) -> dict[str, object]:
    return asdict(verdict)
