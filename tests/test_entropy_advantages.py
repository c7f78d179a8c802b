"""Token entropy (chunked vs naive vs verl) and GRPO advantages (vs verl)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sent.advantages import grpo_advantages
from sent.entropy import token_entropy

verl_F = pytest.importorskip("verl.utils.torch_functional", reason="parity tests need the verl package")
core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")


def naive_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), dim=-1)
    return -(p * torch.log(p)).sum(-1).float()


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 10_000])
def test_token_entropy_matches_naive_and_verl(chunk_rows):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, 50, generator=g) * 3
    h = token_entropy(logits, chunk_rows=chunk_rows)
    assert h.shape == (3, 11)
    torch.testing.assert_close(h, naive_entropy(logits), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, verl_F.entropy_from_logits(logits), rtol=1e-5, atol=1e-5)


def test_token_entropy_known_values_and_bounds():
    logits = torch.zeros(1, 2, 8)
    logits[0, 1, 3] = 1e4  # one certain token
    h = token_entropy(logits)
    assert h[0, 0].item() == pytest.approx(math.log(8), rel=1e-6)  # uniform over 8
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_token_entropy_gradient_matches_naive():
    logits = torch.randn(2, 5, 13)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    token_entropy(a, chunk_rows=3).sum().backward()
    p = torch.softmax(b, -1)
    (-(p * torch.log_softmax(b, -1)).sum(-1)).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_token_entropy_bfloat16_is_upcast():
    logits = torch.randn(2, 3, 40).to(torch.bfloat16)
    h = token_entropy(logits)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, naive_entropy(logits.float()), rtol=1e-4, atol=1e-4)


def verl_grpo(rewards: torch.Tensor, index: np.ndarray, **kw) -> torch.Tensor:
    T = 4
    token_rewards = torch.zeros(len(rewards), T)
    token_rewards[:, -1] = rewards  # outcome reward on the last token, as verl places it
    adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, torch.ones(len(rewards), T), index, **kw)
    return adv[:, 0]


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_grpo_matches_verl(seed, norm):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 6, size=40)
    groups[-1] = 99  # a group of one
    rewards = torch.tensor(rng.choice([-1.0, 1.0], size=40), dtype=torch.float32)
    ours = grpo_advantages(rewards, torch.as_tensor(groups), norm_by_std=norm)
    uids = np.array([f"uid-{g}" for g in groups], dtype=object)  # verl groups by uid strings
    torch.testing.assert_close(ours, verl_grpo(rewards, uids, norm_adv_by_std_in_grpo=norm), rtol=1e-5, atol=1e-6)


def test_grpo_known_answer():
    # group 0: rewards 1, -1, -1, -1 -> mean -0.5, unbiased std sqrt((2.25 + 3*0.25)/3) = 1
    # group 1: all equal -> advantage 0 (no signal); group 2: one response -> r / (1 + eps)
    r = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = grpo_advantages(r, g)  # eps = 1e-6 keeps the all-equal group at 0 / (0 + eps) = 0
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0]), rtol=1e-5, atol=1e-5)


def test_grpo_shape_errors():
    with pytest.raises(ValueError):
        grpo_advantages(torch.zeros(3), torch.zeros(4, dtype=torch.long))
