"""A faster path through a large booster for a few rows, with the same floats as xgboost's predict.

xgboost 3.2's `inplace_predict` has a fixed cost per call that grows with the model's node count,
not with the rows: 1.5 ms for one row through 350 trees of depth 10 (454,000 nodes), against 0.17 ms
through the quick preset's 80 trees of depth 6 (docs/benchmarks.md). Asking the same booster for
each row's leaf (`pred_leaf`, which walks the same trees with the same missing-value rules) costs
~0.3 ms, and the prediction is then the base score plus the leaves' values, added up in float32 in
tree order, as xgboost adds them, so the result is bit for bit the same (tested on real rows).
The leaf walk costs more per row than `inplace_predict`, so it only pays for small batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

# Rows up to which the leaf path is taken, and the node count from which it pays (measured on
# 350 trees of depth 10: leaf path 0.29 ms + ~0.04 ms per row, inplace_predict 1.5 ms + ~0.013 ms
# per row; at 80 trees of depth 6, ~10,000 nodes, inplace_predict is the faster one at one row).
MAX_ROWS = 16
MIN_NODES = 100_000


@dataclass(frozen=True)
class LeafTable:
    """Every node's value per tree (a leaf's value is its output), and the booster's base score."""

    values: np.ndarray  # float32 [trees, most nodes in one tree]; unused cells are 0
    base_score: np.float32
    nodes: int  # nodes in all the trees

    @classmethod
    def of(cls, booster: xgb.Booster) -> LeafTable | None:
        """The table, or None for a booster whose output is not the plain sum of its leaves."""
        learner = json.loads(booster.save_raw("json"))["learner"]
        params = learner["learner_model_param"]
        # Identity link and one output only: then `predict` is base_score + the leaves, nothing more.
        if learner["objective"]["name"] != "reg:squarederror" or params.get("num_target", "1") != "1":
            return None
        if learner["gradient_booster"]["name"] != "gbtree":
            return None
        trees = learner["gradient_booster"]["model"]["trees"]
        widest = max((len(t["split_conditions"]) for t in trees), default=0)
        values = np.zeros((len(trees), widest), dtype=np.float32)
        for i, tree in enumerate(trees):
            # A leaf's "split condition" is its value (xgboost's JSON model format).
            values[i, : len(tree["split_conditions"])] = np.asarray(tree["split_conditions"], dtype=np.float32)
        base = float(str(params["base_score"]).strip("[]"))
        return cls(values, np.float32(base), sum(len(t["split_conditions"]) for t in trees))

    def predict(self, booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
        """What `booster.inplace_predict(matrix)` returns, as float32."""
        leaves = booster.predict(xgb.DMatrix(matrix), pred_leaf=True, validate_features=False)
        leaves = np.asarray(leaves, dtype=np.int64).reshape(len(matrix), -1)
        per_tree = self.values[np.arange(leaves.shape[1]), leaves]
        # cumsum adds left to right (np.sum would add pairwise): the order xgboost adds the trees in.
        terms = np.concatenate([np.full((len(matrix), 1), self.base_score, np.float32), per_tree], axis=1)
        return np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]
