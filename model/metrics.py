"""Forecast metrics. RMSPE is Rossmann's: computed on days with Sales > 0 only."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def rmspe(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared percentage error over the days with y_true > 0."""
    t = np.asarray(y_true, dtype="float64")
    p = np.asarray(y_pred, dtype="float64")
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: y_true {t.shape} vs y_pred {p.shape}")
    mask = t > 0
    if not mask.any():
        raise ValueError("RMSPE needs at least one day with Sales > 0")
    return float(np.sqrt(np.mean(((t[mask] - p[mask]) / t[mask]) ** 2)))


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    t = np.asarray(y_true, dtype="float64")
    p = np.asarray(y_pred, dtype="float64")
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: y_true {t.shape} vs y_pred {p.shape}")
    return float(np.sqrt(np.mean((t - p) ** 2)))
