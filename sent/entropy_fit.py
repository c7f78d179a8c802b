"""How far a run's entropy fell, and the entropy–performance law fitted to it.

Cui et al. (2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv 2505.22617) found that, without an intervention on entropy, a policy's performance R and
its token entropy H follow ``R = -a exp(H) + b`` over training: performance is bought with
entropy, and the ceiling at H = 0 is ``b - a``. We fit it per arm to the training steps, with R
the step's training accuracy and H its mean token entropy (``policy_entropy``). The model is
linear in ``x = exp(H)``, so the fit is ordinary least squares with the usual standard errors.

Entropy collapse is read the way the collapse preset is calibrated: the mean entropy of the
first and of the last ``window`` steps of a run (its stages end to end), and their ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ENTROPY_WINDOW = 5
"""Steps averaged at each end of a run for its start and end entropy."""


@dataclass(frozen=True)
class EntropyDrop:
    start: float
    """Mean entropy of the first ``window`` steps with one (nats)."""
    end: float
    """Mean entropy of the last ``window`` steps with one (nats)."""
    lowest: float

    @property
    def ratio(self) -> float:
        """``end / start``: 0.3 means 70 % of the entropy is gone."""
        return self.end / self.start if self.start > 0 else float("nan")


def entropy_drop(curve: Sequence[float], window: int = ENTROPY_WINDOW) -> EntropyDrop:
    """Start, end and lowest of an entropy curve; steps without an entropy (NaN: no group with
    signal) are left out."""
    finite = [float(h) for h in curve if math.isfinite(h)]
    if not finite:
        return EntropyDrop(float("nan"), float("nan"), float("nan"))
    return EntropyDrop(float(np.mean(finite[:window])), float(np.mean(finite[-window:])), min(finite))


@dataclass(frozen=True)
class EntropyFit:
    """``R = -a exp(H) + b``, fitted; ``*_se`` are standard errors."""

    a: float
    b: float
    a_se: float
    b_se: float
    ceiling: float
    """``b - a``: the predicted R at H = 0 (all entropy spent)."""
    ceiling_se: float
    r2: float
    n: int


def fit_entropy_performance(entropy: Sequence[float], reward: Sequence[float]) -> EntropyFit:
    """Least squares of ``reward = b - a exp(entropy)`` over the pairs where both are finite.

    Fewer than three pairs, or entropies that do not vary, leave the fit undefined (NaN)."""
    h = np.asarray(entropy, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    if h.shape != r.shape:
        raise ValueError(f"need one reward per entropy, got {r.shape} for {h.shape}")
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    nan = float("nan")
    if len(h) < 3 or np.ptp(h) == 0:
        return EntropyFit(nan, nan, nan, nan, nan, nan, nan, len(h))
    design = np.column_stack([np.ones_like(h), -np.exp(h)])  # columns: b, a
    coef, *_ = np.linalg.lstsq(design, r, rcond=None)
    b, a = (float(c) for c in coef)
    residual = r - design @ coef
    dof = len(h) - 2
    sigma2 = float(residual @ residual) / dof
    cov = sigma2 * np.linalg.inv(design.T @ design)
    var_b, var_a, cov_ab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    total = float(((r - r.mean()) ** 2).sum())
    return EntropyFit(
        a=a,
        b=b,
        a_se=math.sqrt(var_a),
        b_se=math.sqrt(var_b),
        ceiling=b - a,
        ceiling_se=math.sqrt(max(var_a + var_b - 2 * cov_ab, 0.0)),
        r2=1 - float(residual @ residual) / total if total > 0 else nan,
        n=len(h),
    )
