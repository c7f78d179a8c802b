"""Our policy losses inside unmodified verl, loaded in verl's own processes.

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

SENT's coefficients reach verl through `SentPolicyLossConfig`, a subclass of verl's
``PolicyLossConfig``: point ``actor_rollout_ref.actor.policy_loss._target_`` at it and add the
fields with ``+key=value`` (verl's own ``omega_conf_to_dataclass`` then builds our class).

Token entropy: verl 0.9 computes the policy's exact token entropy in the actor (with
``actor.calculate_entropy=true``) but does not pass it to the policy loss. This module wraps verl's
``ppo_loss`` (``verl.workers.utils.losses``, used by the 0.9 engine workers) so that the entropy of
``model_output`` is put in a context variable for the duration of the call, where our loss finds
it. ``entropy_source`` in the policy-loss config chooses: ``exact`` (that entropy; an error if it
is missing), ``surprisal`` (the sampled token's ``-log pi(y_t)``, detached: the one-sample
Monte-Carlo estimate of the entropy, noisier), or ``auto`` (exact when present, else surprisal with
a warning). An ``entropy=`` keyword, when a caller supplies one, takes precedence.
Supported verl: 0.9.x (``SUPPORTED_VERL``); the wrapper checks ``ppo_loss``'s signature.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import inspect
import logging
import re
import sys
import time
from typing import Any

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss
from verl.workers.config import PolicyLossConfig as VerlPolicyLossConfig

from sent.errors import SentError
from sent.losses import POLICY_LOSSES, PolicyLossConfig, metrics_to_floats

logger = logging.getLogger(__name__)
SUPPORTED_VERL = ">=0.9,<0.10"
LOSS_TIME_METRIC = "actor/loss_seconds"
_DEFAULTS = PolicyLossConfig()
_ENTROPY: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("sent_verl_entropy", default=None)
_warned_surprisal = False


@dataclasses.dataclass
class SentPolicyLossConfig(VerlPolicyLossConfig):
    """verl's ``PolicyLossConfig`` with SENT's coefficients (defaults: `sent.losses.PolicyLossConfig`).

    ``actor_rollout_ref.actor.policy_loss._target_=sent.engines.verl_plugin.SentPolicyLossConfig``
    ``+actor_rollout_ref.actor.policy_loss.high_cov_coef=2.0`` ..."""

    low_entropy_fraction: float = _DEFAULTS.low_entropy_fraction
    high_cov_coef: float = _DEFAULTS.high_cov_coef
    low_cov_coef: float = _DEFAULTS.low_cov_coef
    sent_ppo_clip: bool = _DEFAULTS.sent_ppo_clip
    low_entropy_penalty: str = _DEFAULTS.low_entropy_penalty
    entropy_mask_fraction: float = _DEFAULTS.entropy_mask_fraction
    entropy_source: str = "auto"

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.entropy_source not in ("auto", "exact", "surprisal"):
            raise ValueError(f"entropy_source={self.entropy_source!r}: use auto, exact or surprisal")


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
    names = set(PolicyLossConfig.model_fields)
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
            entropy = _entropy_for(log_prob, _get(_get(config, "policy_loss"), "entropy_source") or "auto")
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


def _entropy_for(log_prob: torch.Tensor, source: str) -> torch.Tensor:
    """The token entropy the loss ranks by: see the module docstring."""
    global _warned_surprisal
    exact = _ENTROPY.get()
    if exact is not None and exact.shape != log_prob.shape:
        raise ValueError(f"token entropy of shape {tuple(exact.shape)} for log-probs of shape {tuple(log_prob.shape)}")
    if source == "surprisal":
        return -log_prob.detach()
    if exact is not None:
        return exact.detach()
    if source == "exact":
        raise ValueError(
            "entropy_source=exact but verl passed no token entropy: set actor_rollout_ref.actor.calculate_entropy=true "
            "(and run verl's engine workers, whose ppo_loss this plugin wraps)"
        )
    if not _warned_surprisal:
        _warned_surprisal = True
        logger.warning("no exact token entropy from verl (calculate_entropy=false?): ranking tokens by surprisal")
    return -log_prob.detach()


def with_entropy(ppo_loss):
    """Wrap verl's ``ppo_loss(config, model_output, data, dp_group=None)`` so that our policy losses
    see the exact token entropy of ``model_output`` (padded to the response layout, as verl pads
    the log-probs)."""
    if getattr(ppo_loss, "__sent_wrapped__", False):
        return ppo_loss
    params = list(inspect.signature(ppo_loss).parameters)
    if params[:3] != ["config", "model_output", "data"]:
        raise RuntimeError(f"verl's ppo_loss has the signature {params}; this plugin supports verl {SUPPORTED_VERL}")

    from verl.utils.metric.utils import Metric

    @functools.wraps(ppo_loss)
    def ppo_loss_with_entropy(config, model_output, data, dp_group=None):
        from verl.workers.utils.padding import no_padding_2_padding

        entropy = model_output.get("entropy", None)
        token = _ENTROPY.set(None if entropy is None else no_padding_2_padding(entropy, data))
        start = time.perf_counter()
        try:
            loss, metrics = ppo_loss(config, model_output, data, dp_group)
        finally:
            _ENTROPY.reset(token)
        # the loss's own time, summed over a step's micro-batches, to set against timing_s/update_actor
        # (host time: exact on the CPU; on GPUs it misses kernels still running)
        metrics[LOSS_TIME_METRIC] = Metric(aggregation="sum", value=time.perf_counter() - start)
        return loss, metrics

    ppo_loss_with_entropy.__sent_wrapped__ = True
    return ppo_loss_with_entropy


class UnsupportedVerlError(SentError, RuntimeError):
    """The installed verl is outside `SUPPORTED_VERL`: the loss and entropy wiring name its functions."""


def check_verl_version(version: str | None = None) -> str:
    """verl's installed version (or ``version``); raises `UnsupportedVerlError` outside
    `SUPPORTED_VERL`. A job on such a verl fails in its first worker instead of training
    without SENT's entropy or with a loss called the wrong way."""
    import importlib.metadata

    version = version or importlib.metadata.version("verl")
    major_minor = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if major_minor != (0, 9):
        raise UnsupportedVerlError(
            f"verl {version} is installed; sent's verl plugin supports verl {SUPPORTED_VERL} (its loss signature and "
            "the ppo_loss it wraps for exact entropy). Install verl>=0.9,<0.10, or check the wiring against this "
            "verl and widen SUPPORTED_VERL."
        )
    return version


def install_entropy_wiring() -> None:
    """Replace ``ppo_loss`` in verl's loss module (and in modules that imported it already) with
    `with_entropy`'s wrapper; idempotent."""
    losses = importlib.import_module("verl.workers.utils.losses")
    wrapped = with_entropy(vars(losses)["ppo_loss"])
    for name in (losses.__name__, "verl.workers.engine_workers", "verl.trainer.distillation.losses"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "ppo_loss"):
            vars(module)["ppo_loss"] = wrapped


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


check_verl_version()
register_all()
install_entropy_wiring()
