"""Curriculum stages from semantic entropy: low entropy first (METHOD.md §2).

The paper trains on D_1 ... D_K sorted by semantic entropy; its split rule is not published.
Two rules, both pure functions of the values (never of the input order, so ties are never
split across stages):

- ``quantile`` (default): equal-count stages by rank. Each block of equal values goes, whole, to
  the stage where its mid-rank falls: with ``b`` values strictly below it and ``c`` copies, to
  stage ``1 + floor(K (b + (c - 1) / 2) / n)``; the lowest block always opens stage 1. For
  distinct values that is the plain rank rule ``1 + floor(K r / n)``; with heavy ties (SE takes
  few distinct values at N = 8, and a large block often sits at ln N) a block is placed where
  most of it belongs instead of where it starts, so one big block cannot empty a stage by itself.
  All-equal input is all stage 1. With K > n, or fewer distinct values than K, some stage ids
  stay empty: ids keep their quantile meaning rather than being renumbered.
- ``threshold``: K - 1 increasing thresholds; ``x < t_1`` is stage 1, ``t_1 <= x < t_2`` stage 2, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def assign_stages(
    entropy: np.ndarray | Sequence[float],
    *,
    n_stages: int = 2,
    method: Literal["quantile", "threshold"] = "quantile",
    thresholds: Sequence[float] | None = None,
) -> np.ndarray:
    """Stage id (1..K, low entropy first) of every problem.

    Args:
        entropy: ``(n,)`` semantic entropies (finite).
        n_stages: K.
        method: ``quantile`` or ``threshold``.
        thresholds: the K - 1 stage boundaries for ``threshold`` (strictly increasing).

    Returns:
        ``(n,)`` int64 stage ids.
    """
    x = np.asarray(entropy, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"entropy must be 1-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"entropy must be finite; position {bad} is {x[bad]}")
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    if method == "quantile":
        if thresholds is not None:
            raise ValueError("thresholds are only used with method='threshold'")
        n = x.size
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        below = np.cumsum(counts) - counts  # values strictly below each distinct value
        stage_of_value = 1 + np.floor(n_stages * (below + (counts - 1) / 2) / n).astype(np.int64)
        stage_of_value[0] = 1  # the lowest block opens the curriculum
        return stage_of_value[inverse]
    if method == "threshold":
        if thresholds is None or len(thresholds) != n_stages - 1:
            raise ValueError(f"method='threshold' with {n_stages} stages needs {n_stages - 1} thresholds")
        cuts = np.asarray(thresholds, dtype=np.float64)
        if (np.diff(cuts) <= 0).any() or not np.isfinite(cuts).all():
            raise ValueError(f"thresholds must be finite and strictly increasing, got {list(thresholds)}")
        return 1 + np.searchsorted(cuts, x, side="right").astype(np.int64)
    raise ValueError(f"unknown method {method!r}; use 'quantile' or 'threshold'")


def stage_summary(entropy: np.ndarray, stages: np.ndarray, n_stages: int) -> list[dict[str, float]]:
    """Count and SE statistics per stage (empty stages included), for manifests and logs."""
    x = np.asarray(entropy, dtype=np.float64)
    out = []
    for k in range(1, n_stages + 1):
        sel = x[stages == k]
        out.append(
            {
                "stage": k,
                "count": int(sel.size),
                "se_mean": float(sel.mean()) if sel.size else float("nan"),
                "se_min": float(sel.min()) if sel.size else float("nan"),
                "se_max": float(sel.max()) if sel.size else float("nan"),
            }
        )
    return out
