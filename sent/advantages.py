"""GRPO outcome advantages (Shao et al. 2024), as in verl's ``compute_grpo_outcome_advantage``.

``A_i = (R_i - mean_g R) / (std_g R + eps)`` over the G responses of the same prompt ``g``, with
the unbiased standard deviation; a group of one has mean 0 and std 1 (verl's convention).
``norm_by_std=False`` gives Dr. GRPO's ``R_i - mean_g R``. Vectorised with scatter-adds instead of
verl's Python loop over the batch; the caller broadcasts the result over response tokens.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def grpo_advantages(
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-normalised advantages.

    Args:
        rewards: ``(B,)`` scalar outcome reward per response.
        group_index: ``(B,)`` integer id of each response's prompt (any values, any order).
        norm_by_std: divide by the group's standard deviation (GRPO) or not (Dr. GRPO).
        eps: added to the standard deviation.

    Returns:
        ``(B,)`` advantages, float.
    """
    if rewards.ndim != 1 or group_index.shape != rewards.shape:
        raise ValueError(f"rewards and group_index must both be (B,), got {rewards.shape}, {group_index.shape}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    _, inverse, counts = torch.unique(group_index, return_inverse=True, return_counts=True)
    n = counts.to(r.dtype)
    mean = torch.zeros_like(n).scatter_add_(0, inverse, r) / n
    sq = torch.zeros_like(n).scatter_add_(0, inverse, (r - mean[inverse]) ** 2)
    std = torch.sqrt(sq / (n - 1).clamp(min=1))
    single = counts == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    centred = r - mean[inverse]
    return centred / (std[inverse] + eps) if norm_by_std else centred
