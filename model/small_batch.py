"""A faster path through the booster for a few rows, with the same floats as xgboost's predict.

xgboost 3.2's `inplace_predict` has a fixed cost per call that grows with the model's node count,
not with the rows: 1.5 ms for one row through 350 trees of depth 10 (about 500,000 nodes), ~0.2 ms
through the quick preset's 80 trees of depth 6 (docs/benchmarks.md). Walking the trees here with
numpy, all trees at once, one level per step, costs ~0.1 ms and ~0.05 ms for that one row. The walk
follows xgboost's rules (left when the float32 feature is below the float32 split condition; a
missing value takes the node's default branch), and the leaves' values are added up in float32 in
tree order after the base score, as xgboost adds them, so the result is bit for bit the same
(tested on real, random and missing-valued rows). The walk's cost grows with rows x trees x depth,
so it only pays for small batches.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

# Rows up to which the walk is taken (benchmarks/tree_walk.py, one thread, docs/benchmarks.md): at 16
# rows it beats or ties inplace_predict on 80 trees of depth 6 (0.11 vs 0.19 ms), 350 of depth 6
# (0.37 vs 0.36) and 350 of depth 10 (0.53 vs 1.59); at 64 rows it loses or ties on all three.
MAX_ROWS = 16


@dataclass(frozen=True)
class TreeWalk:
    """All trees' nodes in flat arrays; node ids are offsets into them, each tree's root first."""

    roots: np.ndarray  # int32 [trees]: each tree's root node
    children: np.ndarray  # int32 [2 * nodes]: left child at 2*node, right at 2*node+1; a leaf points to itself
    feature: np.ndarray  # int32 [nodes]: the split's feature column (0 for a leaf)
    threshold: np.ndarray  # float32 [nodes]: the split condition; a leaf's value for a leaf
    missing_right: np.ndarray  # bool [nodes]: a missing value goes right
    depth: int  # the deepest leaf's depth: steps that bring every row to a leaf
    base_score: np.float32
    columns: int  # features the booster was trained on

    @property
    def nodes(self) -> int:
        return len(self.threshold)

    @classmethod
    def of(cls, booster: xgb.Booster) -> TreeWalk | None:
        """The walk, or None for a booster whose output is not the plain sum of numeric-split trees."""
        walk = cls._build(booster)
        _release_freed_heap()  # after the model's parsed form is gone
        return walk

    @classmethod
    def _build(cls, booster: xgb.Booster) -> TreeWalk | None:
        learner = json.loads(booster.save_raw("json"), object_hook=_tree_arrays)["learner"]
        params = learner["learner_model_param"]
        # Identity link and one output only: then `predict` is base_score + the leaves, nothing more.
        if learner["objective"]["name"] != "reg:squarederror" or params.get("num_target", "1") != "1":
            return None
        if learner["gradient_booster"]["name"] != "gbtree":  # dart scales its trees
            return None
        trees = learner["gradient_booster"]["model"]["trees"]
        if not trees or any(t["split_type"].any() for t in trees):  # categorical splits test sets, not "<"
            return None
        sizes = np.array([len(t["left_children"]) for t in trees], dtype=np.int64)
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        offsets = np.repeat(roots, sizes)  # each node's tree's first node: child ids become global
        left = np.concatenate([t["left_children"] for t in trees]).astype(np.int64)
        right = np.concatenate([t["right_children"] for t in trees]).astype(np.int64)
        leaf = left == -1
        node = np.arange(len(left))
        left = np.where(leaf, node, left + offsets)
        right = np.where(leaf, node, right + offsets)
        return cls(
            roots=roots.astype(np.int32),
            children=np.stack([left, right], axis=1).ravel().astype(np.int32),
            feature=np.where(leaf, 0, np.concatenate([t["split_indices"] for t in trees])).astype(np.int32),
            # A leaf's "split condition" is its value (xgboost's JSON model format).
            threshold=np.concatenate([t["split_conditions"] for t in trees]),
            missing_right=~np.concatenate([t["default_left"] for t in trees]),
            depth=_depth(roots, left, right, leaf),
            # One target (checked above), so a vector base score has one element: "[5.8E0]".
            base_score=np.float32(float(str(params["base_score"]).strip("[]"))),
            columns=booster.num_features(),
        )

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """What `booster.inplace_predict(matrix)` returns, as float32."""
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        rows, columns = x.shape
        # The flat gather below would read the next row's values rather than fail, as xgboost does.
        if columns != self.columns:
            raise ValueError(f"feature shape mismatch: the booster expects {self.columns} columns, got {columns}")
        flat = x.ravel()
        row_start = (np.arange(rows, dtype=np.int32) * columns)[:, None]
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        missing = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            value = flat[row_start + self.feature[node]]
            # `>=` is "not <" except for NaN, which goes where the node's default sends it.
            go_right = value >= self.threshold[node]
            if missing:
                go_right |= np.isnan(value) & self.missing_right[node]
            node = self.children[2 * node + go_right]
        terms = np.concatenate([np.full((rows, 1), self.base_score, np.float32), self.threshold[node]], axis=1)
        # cumsum adds left to right (np.sum would add pairwise): the order xgboost adds the trees in.
        return np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]


_TREE_ARRAYS = {
    "left_children": np.int32,
    "right_children": np.int32,
    "split_indices": np.int32,
    "split_conditions": np.float32,
    "default_left": bool,
    "split_type": np.int8,
}


def _tree_arrays(obj: dict[str, Any]) -> dict[str, Any]:
    """json.loads hook: a tree keeps only what the walk needs, as arrays, as soon as it is parsed, so
    the model's other per-node lists (gains, hessians, parents, weights) never pile up in memory."""
    if not _TREE_ARRAYS.keys() <= obj.keys():  # not a tree (the model's other objects, attributes)
        return obj
    return {key: np.asarray(obj[key], dtype=dtype) for key, dtype in _TREE_ARRAYS.items()}


def _release_freed_heap() -> None:
    """Hand the heap that xgboost's JSON writer and the parse freed back to the OS (glibc keeps it):
    measured on the registered model, 59 MB more resident after building the walk without this, 22
    with it. Elsewhere than glibc this is a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded into this process
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        trim(0)


def _depth(roots: np.ndarray, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> int:
    """Levels below the roots down to the deepest leaf: the walk's number of steps."""
    level, depth = roots, 0
    while True:
        inner = level[~leaf[level]]
        if len(inner) == 0:
            return depth
        level, depth = np.concatenate([left[inner], right[inner]]), depth + 1
