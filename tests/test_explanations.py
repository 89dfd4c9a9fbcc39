"""Per-prediction explanations: xgboost's TreeSHAP (`pred_contribs`) through the model's own code."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.features import FEATURES
from model.inputs import Requests
from model.synthetic import generate
from model.training import TrainConfig, train


def test_contributions_plus_bias_equal_the_log_prediction() -> None:
    raw = generate(stores=4, days=120, seed=2)
    trained = train(raw, TrainConfig.quick(), progress=False)
    rows = raw.train.tail(60)
    req = Requests.from_frame(rows)
    contribs = trained.forecaster.contributions(req)
    assert contribs.shape == (len(rows), len(FEATURES) + 1)
    np.testing.assert_allclose(contribs.sum(axis=1), trained.forecaster.log_sales(req), rtol=1e-5, atol=1e-4)
    # Not a constant split: promotions move the forecast, and the Promo column carries it.
    assert np.abs(contribs[:, FEATURES.index("Promo")]).max() > 0
    assert trained.forecaster.contributions(Requests.from_frame(pd.DataFrame(rows.head(0)))).shape == (
        0,
        len(FEATURES) + 1,
    )
