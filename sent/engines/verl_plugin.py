"""Our policy losses inside unmodified verl: the only module of `sent` that imports verl.

verl loads this module on ``import verl`` through the ``verl.plugins`` entry point declared in
``pyproject.toml``; it registers every loss of `sent.losses` into verl's ``POLICY_LOSS_REGISTRY``:
``sent`` under its own name, the others as ``sent_<name>`` (``sent_entropy_mask``,
``sent_kl_cov``, ``sent_clip_cov``, ``sent_ppo_clip``) so that verl's own ``kl_cov`` etc. stay
available beside ours. Select one with ``actor_rollout_ref.actor.policy_loss.loss_mode=sent``.

The adapter translates verl's call ``(old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode, config, rollout_is_weights)`` into ours: coefficients come from verl's
``ActorConfig`` (``clip_ratio*``) and ``config.policy_loss`` (``kl_cov_ratio``, ``ppo_kl_coef``,
``clip_cov_*`` and, where the policy-loss config carries them, SENT's ``low_entropy_fraction``,
``high_cov_coef``, ``low_cov_coef``, ``sent_ppo_clip``, ``low_entropy_penalty``,
``entropy_mask_fraction``); verl's ``global_batch_info`` becomes our data-parallel aggregation.

Token entropy: verl 0.9 computes the entropy of the policy in the actor but does not pass it to
the policy loss. Until the worker wiring lands, the adapter uses the sampled token's surprisal
``-log pi(y_t)`` (detached) as its estimate: it is the one-sample Monte-Carlo estimate of the
entropy at t, so ranking tokens by it selects confident tokens, but it is noisier than the exact
entropy. An ``entropy=`` keyword, when a caller supplies one, takes precedence.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

from sent.losses import POLICY_LOSSES, PolicyLossConfig, metrics_to_floats

logger = logging.getLogger(__name__)

VERL_NAME_PREFIX = "sent_"
_POLICY_LOSS_FIELDS = (
    "kl_cov_ratio",
    "ppo_kl_coef",
    "clip_cov_ratio",
    "clip_cov_lb",
    "clip_cov_ub",
    "low_entropy_fraction",
    "high_cov_coef",
    "low_cov_coef",
    "sent_ppo_clip",
    "low_entropy_penalty",
    "entropy_mask_fraction",
)
_ACTOR_FIELDS = ("clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c")


def verl_name(name: str) -> str:
    """The name a loss of `sent.losses` has in verl's registry."""
    return name if name == "sent" else VERL_NAME_PREFIX + name


def _get(cfg: Any, key: str) -> Any:
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        return cfg.get(key)
    getter = getattr(cfg, "get", None)
    if callable(getter):
        try:
            return getter(key, None)
        except Exception:
            pass
    return getattr(cfg, key, None)


def policy_loss_config_from_verl(config: Any, loss_agg_mode: str) -> PolicyLossConfig:
    """Our `PolicyLossConfig` from verl's actor config (a dataclass or an OmegaConf node)."""
    values: dict[str, Any] = {"loss_agg_mode": loss_agg_mode}
    for key in _ACTOR_FIELDS:
        if (v := _get(config, key)) is not None:
            values[key] = v
    policy_loss = _get(config, "policy_loss")
    for key in _POLICY_LOSS_FIELDS:
        if (v := _get(policy_loss, key)) is not None:
            values[key] = v
    batch = _get(config, "global_batch_info") or {}
    if batch:
        values["dp_size"] = int(batch.get("dp_size", 1))
        if batch.get("batch_num_tokens") is not None:
            values["global_batch_num_tokens"] = int(batch["batch_num_tokens"])
        if batch.get("global_batch_size") is not None:
            values["global_batch_size"] = int(batch["global_batch_size"])
        if batch.get("loss_scale_factor") is not None:
            values["loss_scale_factor"] = batch["loss_scale_factor"]
    names = {f.name for f in dataclasses.fields(PolicyLossConfig)}
    return PolicyLossConfig(**{k: v for k, v in values.items() if k in names})


def make_verl_policy_loss(name: str):
    """A verl-signature wrapper around our registered loss ``name``."""
    fn = POLICY_LOSSES[name]

    def verl_policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if rollout_is_weights is not None:
            raise ValueError(
                f"policy loss {verl_name(name)!r} does not support rollout-correction weights; "
                "disable algorithm.rollout_correction or use a verl loss"
            )
        ours = policy_loss_config_from_verl(config, loss_agg_mode)
        if entropy is None:
            entropy = -log_prob.detach()  # surprisal: see the module docstring
        loss, metrics = fn(
            log_prob=log_prob,
            old_log_prob=old_log_prob,
            advantages=advantages,
            response_mask=response_mask.bool(),
            entropy=entropy,
            config=ours,
        )
        return loss, {f"actor/{k}": v for k, v in metrics_to_floats(metrics).items()}

    verl_policy_loss.__name__ = f"verl_{name}_loss"
    verl_policy_loss.__doc__ = f"verl adapter of sent.losses {name!r}.\n\n{fn.__doc__ or ''}"
    return verl_policy_loss


def register_all() -> list[str]:
    """Register every loss of `sent.losses` into verl (idempotent); returns the verl names."""
    registered = []
    for name in POLICY_LOSSES:
        key = verl_name(name)
        if key not in POLICY_LOSS_REGISTRY:
            register_policy_loss(key)(make_verl_policy_loss(name))
        registered.append(key)
    logger.debug("registered sent policy losses in verl: %s", registered)
    return registered


register_all()
