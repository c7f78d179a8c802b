"""The coefficients of the policy losses (`sent.losses`), without torch.

`PolicyLossConfig` is a config section (`sent.config_base.Section`) declared here, away from
torch, so that a config can be loaded and checked without importing it: ``sent --help`` and a
config check stay fast. It is the ``training.policy_loss`` section itself, and the losses read
it directly; each field's docstring is its description in the config reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, model_validator

from sent.config_base import Section

BUILTIN_LOSSES = ("ppo_clip", "kl_cov", "clip_cov", "entropy_mask", "sent")
"""The losses `sent.losses` registers (checked against its registry by the tests), known here so
that a config can name-check ``training.loss`` without importing torch."""

LossAggMode = Literal["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


class PolicyLossConfig(Section):
    """Coefficients of every registered policy loss (each loss reads the fields it needs)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    loss_agg_mode: LossAggMode = "token-mean"
    """How token losses become a scalar (see `agg_loss`)."""
    loss_scale_factor: float | None = None
    """Divisor of ``seq-mean-token-sum-norm``; ``None`` means the padded response length T."""
    clip_ratio: float = 0.2
    """PPO clip range epsilon."""
    clip_ratio_low: float | None = None
    """Lower clip range (``1 - eps_low``); ``None`` means ``clip_ratio``."""
    clip_ratio_high: float | None = None
    """Upper clip range (``1 + eps_high``, DAPO's clip-higher); ``None`` means ``clip_ratio``."""
    clip_ratio_c: float = 3.0
    """Dual-clip bound c > 1 for negative advantages (Ye et al. 2019)."""
    kl_cov_ratio: float = 2e-4
    """rho: share of the candidate tokens, by largest covariance, that get the KL penalty."""
    ppo_kl_coef: float = 0.1
    """beta: weight of ``|log pi - log pi_old|`` on the penalised tokens."""
    clip_cov_ratio: float = 2e-4
    """Clip-Cov: share of valid tokens whose gradient is detached."""
    clip_cov_lb: float = 1.0
    """Clip-Cov: lower covariance bound of the candidates."""
    clip_cov_ub: float = 5.0
    """Clip-Cov: upper covariance bound of the candidates."""
    low_entropy_fraction: float = 0.8
    """f (SENT): share of valid tokens, by lowest entropy, that form the low-entropy set L."""
    high_cov_coef: float = 2.0
    """c_hi (SENT): penalty multiplier of the k' tokens of L with the largest covariance."""
    low_cov_coef: float = 0.5
    """c_lo (SENT): penalty multiplier of the k' tokens of L with the smallest covariance."""
    sent_ppo_clip: bool = False
    """SENT: use the clipped PPO surrogate as the base loss (the release uses ``-A * ratio``)."""
    low_entropy_penalty: Literal["covariance", "all"] = "covariance"
    """SENT: ``covariance`` (released) penalises the high/low-covariance tokens of L; ``all`` is the
    earlier v1: beta * |dlogp| on every token of L and high-entropy tokens dropped from the loss."""
    entropy_mask_fraction: float = 0.2
    """q (80/20): share of valid tokens, by highest entropy, that carry the policy gradient."""
    dp_size: int = 1
    """Set by a distributed engine: data-parallel ranks the loss is averaged over (verl's
    ``global_batch_info``); with ``dp_size > 1`` the two global counts below are required."""
    global_batch_num_tokens: int | None = None
    """Set by a distributed engine: valid tokens in the global batch (``token-mean``)."""
    global_batch_size: int | None = None
    """Set by a distributed engine: sequences in the global batch (``seq-mean-*``)."""

    def clip_range(self) -> tuple[float, float]:
        """(epsilon_low, epsilon_high): the asymmetric bounds fall back to ``clip_ratio``."""
        low = self.clip_ratio_low if self.clip_ratio_low is not None else self.clip_ratio
        high = self.clip_ratio_high if self.clip_ratio_high is not None else self.clip_ratio
        return low, high

    @model_validator(mode="after")
    def _in_range(self) -> PolicyLossConfig:
        for name in ("kl_cov_ratio", "clip_cov_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("low_entropy_fraction", "entropy_mask_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.clip_ratio_c <= 1:
            raise ValueError(f"clip_ratio_c must be > 1, got {self.clip_ratio_c}")
        if self.clip_cov_lb >= self.clip_cov_ub:
            raise ValueError("clip_cov_lb must be < clip_cov_ub")
        for name in ("clip_ratio", "ppo_kl_coef", "high_cov_coef", "low_cov_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self
