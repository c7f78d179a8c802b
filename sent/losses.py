"""Policy losses, registered by name, over padded ``(B, T)`` response tokens.

Every loss has the keyword-only signature::

    fn(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config)
        -> (loss, metrics)

with ``log_prob`` the current policy's log-probability of each sampled token (differentiable),
``old_log_prob`` the rollout policy's, ``advantages`` broadcast over tokens, ``response_mask`` a
boolean (or 0/1) mask of valid tokens, ``entropy`` the exact token entropy of the current policy
(`sent.entropy.token_entropy`), and ``config`` a `PolicyLossConfig`. Tokens are aggregated by
one helper, `agg_loss`.

``metrics`` maps names to detached 0-d tensors, not floats: turning them into floats is a host
sync, which the caller does once per step (`metrics_to_floats`) rather than once per micro-batch.
Token selections (top-k by entropy or covariance) are `sent.token_selection`'s, by rank against a
tensor ``k`` for the same reason: no ``.item()``, ``.cpu()`` or ``nonzero`` inside a loss.

The losses:
- ``ppo_clip``: dual-clip PPO, verl's ``vanilla``.
- ``kl_cov``: KL-Cov (Cui et al. 2025), verl's ``kl_cov``.
- ``clip_cov``: Clip-Cov (Cui et al. 2025), verl's ``clip_cov``.
- ``entropy_mask``: the policy gradient through the top-q highest-entropy ("forking") tokens only
  (Wang et al. 2025, "Beyond the 80/20 rule").
- ``sent``: SENT's low-entropy KL-Cov (METHOD.md §3). Departures from the released code, on
  purpose: a boolean token mask (the release indexes with a 0/1 integer mask, which gathers rows
  and computes the covariances on the wrong values), no device sync, every coefficient a config
  field. The selection scope is the tokens of one loss call (a micro-batch in verl; the local
  engine can make it a mini-batch by setting micro = mini).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch

from sent.loss_config import LossAggMode, PolicyLossConfig
from sent.token_selection import count_of, select_extremes, select_top, static_count_bound

Metrics = dict[str, torch.Tensor]


class PolicyLossFn(Protocol):
    def __call__(
        self,
        *,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        entropy: torch.Tensor | None = None,
        config: PolicyLossConfig,
    ) -> tuple[torch.Tensor, Metrics]: ...


POLICY_LOSSES: dict[str, PolicyLossFn] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: make a loss selectable by ``name`` in configs."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES and POLICY_LOSSES[name] is not fn:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn

    return decorator


def get_policy_loss(name: str) -> PolicyLossFn:
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; registered: {sorted(POLICY_LOSSES)}") from None


def metrics_to_floats(metrics: Metrics) -> dict[str, float]:
    """One host sync for a whole metrics dict."""
    if not metrics:
        return {}
    keys = list(metrics)
    values = torch.stack([metrics[k].detach().float().reshape(()) for k in keys]).cpu().tolist()
    return dict(zip(keys, values, strict=True))


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask``; 0 (not NaN) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: LossAggMode = "token-mean",
    *,
    loss_scale_factor: float | None = None,
    dp_size: int = 1,
    global_batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
) -> torch.Tensor:
    """Aggregate ``(B, T)`` token losses into a scalar, as verl's ``agg_loss`` does.

    - ``token-mean``: sum over valid tokens / number of valid tokens;
    - ``token-sum``: sum over valid tokens;
    - ``seq-mean-token-sum``: mean over non-empty sequences of their token sums;
    - ``seq-mean-token-sum-norm``: the same divided by ``loss_scale_factor`` (default T; Dr. GRPO);
    - ``seq-mean-token-mean``: mean over non-empty sequences of their token means.

    With ``dp_size > 1`` (a distributed engine), sums are divided by the global counts and
    multiplied by ``dp_size``, so that the average over ranks is the global mean.
    Departure from verl: an all-masked batch gives 0, not NaN.
    """
    if dp_size > 1 and (
        (mode == "token-mean" and global_batch_num_tokens is None)
        or (mode.startswith("seq-mean") and global_batch_size is None)
    ):
        raise ValueError(f"loss_agg_mode={mode!r} with dp_size={dp_size} needs the global batch counts")
    mask = loss_mask.to(loss_mat.dtype)
    if mode == "token-mean":
        if global_batch_num_tokens is not None:
            return (loss_mat * mask).sum() / max(global_batch_num_tokens, 1) * dp_size
        return (loss_mat * mask).sum() / mask.sum().clamp(min=1)
    if mode == "token-sum":
        return (loss_mat * mask).sum() * dp_size
    tokens = mask.sum(dim=-1)
    seq_valid = (tokens > 0).to(loss_mat.dtype)
    n_seq = seq_valid.sum().clamp(min=1) if global_batch_size is None else max(global_batch_size, 1) / dp_size
    if mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss = ((loss_mat * mask).sum(dim=-1) * seq_valid).sum() / n_seq
        if mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_scale_factor if loss_scale_factor is not None else loss_mask.shape[-1])
        return loss
    if mode == "seq-mean-token-mean":
        seq_loss = (loss_mat * mask).sum(dim=-1) / (tokens + 1e-8)
        return (seq_loss * seq_valid).sum() / n_seq
    raise ValueError(f"unknown loss_agg_mode {mode!r}")


def _aggregate(losses: torch.Tensor, mask: torch.Tensor, config: PolicyLossConfig) -> torch.Tensor:
    return agg_loss(
        losses,
        mask,
        config.loss_agg_mode,
        loss_scale_factor=config.loss_scale_factor,
        dp_size=config.dp_size,
        global_batch_num_tokens=config.global_batch_num_tokens,
        global_batch_size=config.global_batch_size,
    )


def _ppo_terms(log_prob, old_log_prob, advantages, config: PolicyLossConfig):
    """Dual-clip PPO token losses and their clip statistics (verl ``vanilla``'s arithmetic)."""
    neg_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    low, high = config.clip_range()
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1 - low, 1 + high)
    clipped = torch.maximum(loss1, loss2)
    loss3 = -advantages * config.clip_ratio_c
    dual = torch.minimum(loss3, clipped)
    losses = torch.where(advantages < 0, dual, clipped)
    clip_upper = torch.gt(loss2, loss1)
    clip_lower = torch.gt(clipped, loss3) & (advantages < 0)
    return losses, neg_kl, clip_upper, clip_lower


# --------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------


@register_policy_loss("ppo_clip")
def ppo_clip_loss(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config):
    """Dual-clip PPO surrogate (verl ``vanilla``). ``entropy`` is unused."""
    mask = response_mask.bool()
    losses, neg_kl, clip_upper, clip_lower = _ppo_terms(log_prob, old_log_prob, advantages, config)
    loss = _aggregate(losses, mask, config)
    return loss, {
        "pg_clipfrac": masked_mean(clip_upper.float(), mask).detach(),
        "pg_clipfrac_lower": masked_mean(clip_lower.float(), mask).detach(),
        "ppo_kl": masked_mean(-neg_kl, mask).detach(),
    }


def _low_entropy_cov_penalty(*, log_prob, advantages, mask, n_valid, entropy, fraction, high_coef, low_coef, config):
    """Shared body of ``kl_cov`` (f=1, c_hi=1, c_lo=0) and ``sent``.

    L = the ``max(1, floor(f * n_valid))`` valid tokens of lowest entropy (all valid tokens when
    f = 1); Cov_t = (A_t - mean_L A)(log pi_t - mean_L log pi) with log pi detached;
    k' = max(1, floor(|L| * rho)). The k' largest-Cov tokens of L get ``+ beta c_hi |dlogp|``,
    the k' smallest (among the rest of L) ``+ beta c_lo |dlogp|``. Ties: `select_extremes`.
    Returns (penalty weight (B, T) float, L (B, T) bool, |L| 0-d tensor).
    """
    if fraction >= 1.0:
        low, n_low = mask, n_valid
    else:
        if entropy is None:
            raise ValueError("this loss needs the token entropy (entropy=...); see sent.entropy.token_entropy")
        n_low = torch.minimum(count_of(n_valid, fraction), n_valid.to(torch.float64))
        low = select_top(entropy, mask, n_low, largest=False)
    lp = log_prob.detach()
    lowf = low.to(lp.dtype)
    denom = n_low.to(lp.dtype).clamp(min=1)
    mean_adv = torch.dot(advantages.reshape(-1), lowf.reshape(-1)) / denom
    mean_lp = torch.dot(lp.reshape(-1), lowf.reshape(-1)) / denom
    cov = (advantages - mean_adv) * (lp - mean_lp)
    k = count_of(n_low, config.kl_cov_ratio)
    k_max = static_count_bound(mask.shape, config.kl_cov_ratio)
    if low_coef != 0:
        high, low_cov = select_extremes(cov, low, k, max_k=k_max)
        weight = high.to(lp.dtype) * high_coef + low_cov.to(lp.dtype) * low_coef
    else:
        high = select_top(cov, low, k, largest=True, max_k=k_max)
        weight = high.to(lp.dtype) * high_coef
    return weight, low, n_low


@register_policy_loss("kl_cov")
def kl_cov_loss(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config):
    """KL-Cov: ``-A r`` plus ``beta |log pi - log pi_old|`` on the k' = max(1, floor(rho n)) valid
    tokens with the largest covariance of advantage and log-probability. No clipping."""
    mask = response_mask.bool()
    neg_kl = log_prob - old_log_prob
    abs_kl = neg_kl.abs()
    weight, _, _ = _low_entropy_cov_penalty(
        log_prob=log_prob,
        advantages=advantages,
        mask=mask,
        n_valid=torch.count_nonzero(mask),
        entropy=None,
        fraction=1.0,
        high_coef=1.0,
        low_coef=0.0,
        config=config,
    )
    losses = -advantages * torch.exp(neg_kl) + config.ppo_kl_coef * weight * abs_kl
    loss = _aggregate(losses, mask, config)
    penalised = weight > 0
    return loss, {
        "ppo_kl": masked_mean(abs_kl, mask).detach(),
        "ppo_kl_abs_penalised": masked_mean(abs_kl.detach(), penalised),
        "n_penalised": torch.count_nonzero(weight).detach(),
    }


@register_policy_loss("sent")
def sent_loss(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config):
    """SENT's token-level regulariser (METHOD.md §3): KL-Cov restricted to low-entropy tokens.

    Base loss ``-A r`` (or the clipped PPO surrogate with ``sent_ppo_clip``), plus
    ``beta c_hi |dlogp|`` on the k' highest-covariance and ``beta c_lo |dlogp|`` on the k'
    lowest-covariance tokens of the low-entropy set L. With ``low_entropy_penalty="all"`` (v1):
    ``beta |dlogp|`` on every token of L and the other tokens dropped from the loss.
    Needs ``entropy`` unless ``low_entropy_fraction == 1``.
    """
    mask = response_mask.bool()
    n_valid = torch.count_nonzero(mask)
    neg_kl = log_prob - old_log_prob
    if config.sent_ppo_clip:
        base, _, clip_upper, _ = _ppo_terms(log_prob, old_log_prob, advantages, config)
    else:
        base, clip_upper = -advantages * torch.exp(neg_kl), None
    abs_kl = neg_kl.abs()
    if config.low_entropy_penalty == "all":
        if entropy is None and config.low_entropy_fraction < 1:
            raise ValueError("sent needs the token entropy (entropy=...); see sent.entropy.token_entropy")
        low = (
            mask
            if config.low_entropy_fraction >= 1
            else select_top(entropy, mask, count_of(n_valid, config.low_entropy_fraction), largest=False)
        )
        weight = low.to(log_prob.dtype)
        losses, loss_mask = base + config.ppo_kl_coef * abs_kl, low
    else:
        weight, low, _ = _low_entropy_cov_penalty(
            log_prob=log_prob,
            advantages=advantages,
            mask=mask,
            n_valid=n_valid,
            entropy=entropy,
            fraction=config.low_entropy_fraction,
            high_coef=config.high_cov_coef,
            low_coef=config.low_cov_coef,
            config=config,
        )
        losses, loss_mask = base + config.ppo_kl_coef * weight * abs_kl, mask
    loss = _aggregate(losses, loss_mask, config)
    # Metrics as dot products with float masks: a bool mask multiply costs a cast per call.
    maskf = mask.to(abs_kl.dtype)
    penalised = (weight > 0).to(abs_kl.dtype)
    n_pen = penalised.sum()
    kl = neg_kl.detach().reshape(-1)
    metrics = {
        "ppo_kl": -torch.dot(kl, maskf.reshape(-1)) / n_valid.clamp(min=1),
        "ppo_kl_abs": torch.dot(kl.abs(), maskf.reshape(-1)) / n_valid.clamp(min=1),
        # how far the penalised tokens have moved: the size of the force on them
        "ppo_kl_abs_penalised": torch.dot(kl.abs(), penalised.reshape(-1)) / n_pen.clamp(min=1),
        "n_valid_tokens": n_valid,
        "n_low_entropy": torch.count_nonzero(low),
        "n_penalised": n_pen,
    }
    if clip_upper is not None:
        metrics["pg_clipfrac"] = masked_mean(clip_upper.float(), mask).detach()
    if entropy is not None:
        ent = entropy.detach().reshape(-1)
        lowf = low.to(ent.dtype).reshape(-1)
        metrics["entropy_all"] = torch.dot(ent, maskf.reshape(-1)) / n_valid.clamp(min=1)
        metrics["entropy_low_set"] = torch.dot(ent, lowf) / lowf.sum().clamp(min=1)
        metrics["entropy_penalised"] = torch.dot(ent, penalised.reshape(-1)) / n_pen.clamp(min=1)
    return loss, metrics


@register_policy_loss("clip_cov")
def clip_cov_loss(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config):
    """Clip-Cov: the clipped PPO surrogate with the gradient detached (the token loss zeroed, as in
    verl) on ``max(1, floor(ratio n_valid))`` random tokens among those not clipped by PPO whose
    covariance lies in ``(clip_cov_lb, clip_cov_ub)``. Random choice from the global torch RNG."""
    mask = response_mask.bool()
    neg_kl = log_prob - old_log_prob
    ratio = torch.exp(neg_kl)
    low, high = config.clip_range()
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1 - low, 1 + high)
    clipped_by_ppo = (loss2 > loss1) & mask
    lp = log_prob.detach()
    cov = (advantages - masked_mean(advantages, mask)) * (lp - masked_mean(lp, mask))
    candidates = mask & ~clipped_by_ppo & (cov > config.clip_cov_lb) & (cov < config.clip_cov_ub)
    keys = torch.rand(cov.shape, device=cov.device)
    chosen = select_top(
        keys,
        candidates,
        count_of(mask.sum(), config.clip_cov_ratio),
        largest=False,
        max_k=static_count_bound(mask.shape, config.clip_cov_ratio),
    )
    corr = (~chosen).to(loss1.dtype)
    losses = torch.maximum(loss1, loss2) * corr
    loss = _aggregate(losses, mask, config)
    return loss, {
        "pg_clipfrac": masked_mean(chosen.float(), mask).detach(),
        "ppo_kl": masked_mean(-neg_kl, mask).detach(),
        "n_penalised": chosen.sum().detach(),
    }


@register_policy_loss("entropy_mask")
def entropy_mask_loss(*, log_prob, old_log_prob, advantages, response_mask, entropy=None, config):
    """The clipped PPO surrogate on the ``max(1, floor(q n_valid))`` highest-entropy valid tokens
    only (the "80/20" forking-token method); the other tokens carry no gradient and are left out
    of the aggregation."""
    if entropy is None:
        raise ValueError("entropy_mask needs the token entropy (entropy=...)")
    mask = response_mask.bool()
    losses, neg_kl, clip_upper, clip_lower = _ppo_terms(log_prob, old_log_prob, advantages, config)
    keep = select_top(entropy, mask, count_of(mask.sum(), config.entropy_mask_fraction), largest=True)
    loss = _aggregate(losses, keep, config)
    return loss, {
        "pg_clipfrac": masked_mean(clip_upper.float(), keep).detach(),
        "pg_clipfrac_lower": masked_mean(clip_lower.float(), keep).detach(),
        "ppo_kl": masked_mean(-neg_kl, mask).detach(),
        "n_selected": keep.sum().detach(),
        "entropy_all": masked_mean(entropy.detach(), mask),
        "entropy_selected": masked_mean(entropy.detach(), keep),
    }


# --------------------------------------------------------------------------------------------
# Terms usable with any loss
# --------------------------------------------------------------------------------------------

KlKind = Literal["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl", "k1+", "k3+", "low_var_kl+"]


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: KlKind = "low_var_kl") -> torch.Tensor:
    """Per-token KL estimate of pi to the reference (Schulman's k1/k2/k3), as verl's ``kl_penalty``.

    ``k3``/``low_var_kl``: ``exp(ref - lp) - (ref - lp) - 1``, log-ratio clamped to [-20, 20] and the
    result to [-10, 10]. A ``+`` suffix keeps the value and takes the gradient of k2 (unbiased).
    """
    base = kind[:-1] if kind.endswith("+") else kind
    if base in ("k1", "kl"):
        value = log_prob - ref_log_prob
    elif base == "abs":
        value = (log_prob - ref_log_prob).abs()
    elif base in ("k2", "mse"):
        value = 0.5 * (log_prob - ref_log_prob).square()
    elif base in ("k3", "low_var_kl"):
        log_ratio = torch.clamp(ref_log_prob - log_prob, min=-20, max=20)
        value = torch.clamp(torch.exp(log_ratio) - log_ratio - 1, min=-10, max=10)
    else:
        raise ValueError(f"unknown KL estimator {kind!r}")
    if kind.endswith("+") and base not in ("k2", "mse"):
        k2 = 0.5 * (log_prob - ref_log_prob).square()
        value = k2 - k2.detach() + value.detach()
    return value


def reference_kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    coef: float = 0.001,
    kind: KlKind = "low_var_kl",
    loss_agg_mode: LossAggMode = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """``coef * agg(KL(pi || pi_ref))``: the reference-KL loss term (paper: 0.001 x k3)."""
    kl = kl_penalty(log_prob, ref_log_prob, kind)
    value = agg_loss(kl, response_mask.bool(), loss_agg_mode)
    return coef * value, {"ref_kl": value.detach()}


def entropy_bonus(
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    coef: float,
    loss_agg_mode: LossAggMode = "token-mean",
) -> tuple[torch.Tensor, Metrics]:
    """``-coef * agg(H)``: the term to add to a loss to reward entropy (paper: coef 0)."""
    value = agg_loss(entropy, response_mask.bool(), loss_agg_mode)
    return -coef * value, {"entropy": value.detach()}
