"""Policy losses: parity with verl's own functions, hand-worked 2x6 examples, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from sent.losses import (
    POLICY_LOSSES,
    PolicyLossConfig,
    agg_loss,
    entropy_bonus,
    get_policy_loss,
    kl_penalty,
    metrics_to_floats,
    reference_kl_loss,
    register_policy_loss,
)
from sent.token_selection import select_top

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos", reason="parity tests need the verl package")
from verl.workers.config.actor import ActorConfig  # noqa: E402
from verl.workers.config.actor import PolicyLossConfig as VerlPolicyLossConfig  # noqa: E402


def verl_config(loss_mode: str, **policy_loss) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=4,
        ppo_micro_batch_size_per_gpu=2,
        rollout_n=1,
        policy_loss=VerlPolicyLossConfig(loss_mode=loss_mode, **policy_loss),
    )


def random_batch(seed: int, B: int = 8, T: int = 48):
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(B, T, generator=g) * 3
    old_log_prob = log_prob + torch.randn(B, T, generator=g) * 0.15
    # GRPO-like advantages: one value per sequence, jittered so covariances have no ties
    advantages = torch.randn(B, 1, generator=g).expand(B, T) + torch.randn(B, T, generator=g) * 1e-3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    entropy = torch.rand(B, T, generator=g) * 2
    return log_prob, old_log_prob, advantages.contiguous(), mask, entropy


def ours(name, batch, **cfg):
    log_prob, old_log_prob, advantages, mask, entropy = batch
    return get_policy_loss(name)(
        log_prob=log_prob,
        old_log_prob=old_log_prob,
        advantages=advantages,
        response_mask=mask,
        entropy=entropy,
        config=PolicyLossConfig(**cfg),
    )


def theirs(name, batch, loss_agg_mode="token-mean", **policy_loss):
    log_prob, old_log_prob, advantages, mask, _ = batch
    return core_algos.get_policy_loss_fn(name)(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask.float(),
        loss_agg_mode=loss_agg_mode,
        config=verl_config(name, **policy_loss),
    )


# ---------------------------------------------------------------------------------------------
# parity with verl
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_ppo_clip_equals_verl_vanilla(seed, mode):
    batch = random_batch(seed)
    ref, ref_metrics = theirs("vanilla", batch, loss_agg_mode=mode)
    loss, metrics = ours("ppo_clip", batch, loss_agg_mode=mode)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    floats = metrics_to_floats(metrics)
    for key in ("pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"):
        assert floats[key] == pytest.approx(ref_metrics[f"actor/{key}"], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [2e-4, 0.01, 0.2])
def test_kl_cov_equals_verl_kl_cov(seed, ratio):
    batch = random_batch(seed)
    ref, ref_metrics = theirs("kl_cov", batch, kl_cov_ratio=ratio, ppo_kl_coef=1.0)
    loss, metrics = ours("kl_cov", batch, kl_cov_ratio=ratio, ppo_kl_coef=1.0)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    assert metrics_to_floats(metrics)["ppo_kl"] == pytest.approx(ref_metrics["actor/ppo_kl"], rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_sent_reduces_to_kl_cov(seed):
    # f = 1 (all valid tokens), c_hi = 1, c_lo = 0: SENT is exactly KL-Cov
    batch = random_batch(seed)
    ref, _ = theirs("kl_cov", batch, kl_cov_ratio=0.05, ppo_kl_coef=0.3)
    loss, _ = ours(
        "sent",
        batch,
        kl_cov_ratio=0.05,
        ppo_kl_coef=0.3,
        low_entropy_fraction=1.0,
        high_cov_coef=1.0,
        low_cov_coef=0.0,
    )
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)


def test_gradients_match_verl_kl_cov():
    batch = random_batch(3)
    lp_a = batch[0].clone().requires_grad_(True)
    lp_b = batch[0].clone().requires_grad_(True)
    ref, _ = theirs("kl_cov", (lp_a, *batch[1:]), kl_cov_ratio=0.1)
    loss, _ = ours("kl_cov", (lp_b, *batch[1:]), kl_cov_ratio=0.1)
    ref.backward()
    loss.backward()
    torch.testing.assert_close(lp_b.grad, lp_a.grad, rtol=1e-5, atol=1e-8)


def test_clip_cov_equals_verl_when_every_candidate_is_chosen():
    # verl picks clip_num random candidates; with clip_cov_ratio = 1 every candidate is chosen,
    # so the result no longer depends on the random draw and must match exactly.
    batch = random_batch(4)
    ref, _ = theirs("clip_cov", batch, clip_cov_ratio=1.0, clip_cov_lb=0.01, clip_cov_ub=5.0)
    loss, metrics = ours("clip_cov", batch, clip_cov_ratio=1.0, clip_cov_lb=0.01, clip_cov_ub=5.0)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    assert metrics_to_floats(metrics)["n_penalised"] > 0


def test_clip_cov_detaches_at_most_clip_num_candidates():
    log_prob, old, adv, mask, _ = random_batch(5, B=16, T=64)
    lp = log_prob.clone().requires_grad_(True)
    cfg = PolicyLossConfig(clip_cov_ratio=0.01, clip_cov_lb=0.0, clip_cov_ub=100.0)
    loss, metrics = get_policy_loss("clip_cov")(
        log_prob=lp, old_log_prob=old, advantages=adv, response_mask=mask, config=cfg
    )
    loss.backward()
    n_valid = int(mask.sum())
    chosen = int(metrics["n_penalised"])
    assert 1 <= chosen <= max(1, int(n_valid * 0.01))
    # the chosen tokens have no gradient; valid unchosen tokens do
    no_grad = (lp.grad == 0) & mask
    assert int(no_grad.sum()) >= chosen


@pytest.mark.parametrize(
    "mode",
    ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"],
)
def test_agg_loss_equals_verl(mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[2] = False  # a fully masked sequence
    torch.testing.assert_close(agg_loss(x, mask, mode), core_algos.agg_loss(x, mask.float(), mode))
    # with data-parallel context, as verl's workers pass it
    ctx = {"dp_size": 4, "batch_num_tokens": 90, "global_batch_size": 20}
    ours_dp = agg_loss(x, mask, mode, dp_size=4, global_batch_num_tokens=90, global_batch_size=20)
    torch.testing.assert_close(ours_dp, core_algos.agg_loss(x, mask.float(), mode, **ctx))


@pytest.mark.parametrize("kind", ["k1", "abs", "k2", "low_var_kl", "k3+"])
def test_kl_penalty_equals_verl(kind):
    g = torch.Generator().manual_seed(1)
    lp, ref = -torch.rand(4, 6, generator=g) * 4, -torch.rand(4, 6, generator=g) * 4
    a = lp.clone().requires_grad_(True)
    b = lp.clone().requires_grad_(True)
    ours_kl, theirs_kl = kl_penalty(a, ref, kind), core_algos.kl_penalty(b, ref, kind)
    torch.testing.assert_close(ours_kl, theirs_kl)
    ours_kl.sum().backward()
    theirs_kl.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------------------------------------
# SENT: a hand-worked 2 x 6 example
# ---------------------------------------------------------------------------------------------

MASK = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)  # 5 + 4 = 9 valid
ENTROPY = torch.tensor([[0.1, 0.9, 0.2, 0.5, 0.3, 9.9], [0.05, 0.4, 0.8, 0.6, 9.0, 9.0]])
ADV = torch.tensor([[1.0] * 6, [-1.0] * 6])
LOG_PROB = torch.tensor([[-0.5, -1.0, -0.2, -2.0, -0.1, 0.0], [-0.3, -1.5, -0.7, -0.4, 0.0, 0.0]])
DELTA = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.0], [0.6, 0.7, 0.8, 0.9, 0.0, 0.0]])
OLD_LOG_PROB = LOG_PROB + DELTA  # so ratio = exp(-delta) and |log pi - log pi_old| = delta


def sent_2x6(**cfg):
    return get_policy_loss("sent")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=ENTROPY,
        config=PolicyLossConfig(**cfg),
    )


def test_sent_known_answer():
    # n_valid = 9, f = 0.8 -> |L| = floor(7.2) = 7. Valid entropies sorted:
    #   .05 (1,0) .1 (0,0) .2 (0,2) .3 (0,4) .4 (1,1) .5 (0,3) .6 (1,3) | .8 (1,2) .9 (0,1)
    # L = {(0,0), (0,2), (0,3), (0,4), (1,0), (1,1), (1,3)}.
    # mean_L A = (4 - 3) / 7 = 1/7; mean_L log pi = (-.5 -.2 -2 -.1 -.3 -1.5 -.4) / 7 = -5/7.
    # Cov = (A - 1/7)(log pi + 5/7):
    #   (0,0)  6/7 *  0.2143 =  0.1837   (1,0) -8/7 *  0.4143 = -0.4735
    #   (0,2)  6/7 *  0.5143 =  0.4408   (1,1) -8/7 * -0.7857 =  0.8980
    #   (0,3)  6/7 * -1.2857 = -1.1020   (1,3) -8/7 *  0.3143 = -0.3592
    #   (0,4)  6/7 *  0.6143 =  0.5265
    # rho = 0.3 -> k' = floor(7 * 0.3) = 2. Largest Cov: (1,1), (0,4); smallest: (0,3), (1,0).
    # Penalties beta * c * delta with beta = 0.1, c_hi = 2, c_lo = 0.5:
    #   (1,1) 0.1*2*0.7 = 0.14, (0,4) 0.1*2*0.5 = 0.10, (0,3) 0.1*0.5*0.4 = 0.02, (1,0) 0.1*0.5*0.6 = 0.03
    # Base -A exp(-delta) summed over the 9 valid tokens:
    #   row 0: -(e^-.1 + e^-.2 + e^-.3 + e^-.4 + e^-.5); row 1: +(e^-.6 + e^-.7 + e^-.8 + e^-.9)
    base = -sum(math.exp(-d) for d in (0.1, 0.2, 0.3, 0.4, 0.5)) + sum(math.exp(-d) for d in (0.6, 0.7, 0.8, 0.9))
    expected = (base + 0.14 + 0.10 + 0.02 + 0.03) / 9  # = -0.17222...
    loss, metrics = sent_2x6(kl_cov_ratio=0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    m = metrics_to_floats(metrics)
    assert (m["n_valid_tokens"], m["n_low_entropy"], m["n_penalised"]) == (9, 7, 4)
    # mean entropy of the penalised tokens (1,1) .4, (0,4) .3, (0,3) .5, (1,0) .05
    assert m["entropy_penalised"] == pytest.approx((0.4 + 0.3 + 0.5 + 0.05) / 4)
    assert m["entropy_low_set"] == pytest.approx((0.05 + 0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.6) / 7)
    # |log pi - log pi_old| of the same four: 0.7, 0.5, 0.4, 0.6
    assert m["ppo_kl_abs_penalised"] == pytest.approx((0.7 + 0.5 + 0.4 + 0.6) / 4)


def test_sent_gradient_flows_only_through_the_selected_penalties():
    lp = LOG_PROB.clone().requires_grad_(True)
    loss, _ = get_policy_loss("sent")(
        log_prob=lp,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=ENTROPY,
        config=PolicyLossConfig(kl_cov_ratio=0.3),
    )
    loss.backward()
    # d/d lp of (-A exp(lp - old) + w |lp - old|) / 9; here lp - old = -delta < 0 so d|.|/dlp = -1
    weight = torch.zeros(2, 6)
    weight[1, 1], weight[0, 4], weight[0, 3], weight[1, 0] = 0.2, 0.2, 0.05, 0.05
    expected = (-ADV * torch.exp(-DELTA) - weight) / 9 * MASK
    torch.testing.assert_close(lp.grad, expected)


def test_sent_default_ratio_penalises_one_token_each_way():
    # rho = 2e-4: k' = max(1, floor(7 * 2e-4)) = 1 -> (1,1) with c_hi, (0,3) with c_lo
    loss, metrics = sent_2x6()
    base = -sum(math.exp(-d) for d in (0.1, 0.2, 0.3, 0.4, 0.5)) + sum(math.exp(-d) for d in (0.6, 0.7, 0.8, 0.9))
    assert loss.item() == pytest.approx((base + 0.1 * 2 * 0.7 + 0.1 * 0.5 * 0.4) / 9, rel=1e-6)
    assert metrics_to_floats(metrics)["n_penalised"] == 2


def test_sent_v1_penalises_all_low_entropy_tokens_and_drops_the_rest():
    # low_entropy_penalty="all": L as above (7 tokens), each gets + beta * delta, the two
    # high-entropy tokens (0,1) and (1,2) leave the loss; token-mean over |L| = 7.
    loss, metrics = sent_2x6(low_entropy_penalty="all")
    in_l = [(1.0, 0.1), (1.0, 0.3), (1.0, 0.4), (1.0, 0.5), (-1.0, 0.6), (-1.0, 0.7), (-1.0, 0.9)]
    expected = sum(-a * math.exp(-d) + 0.1 * d for a, d in in_l) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics_to_floats(metrics)["n_penalised"] == 7


def test_sent_with_ppo_clip_base():
    # sent_ppo_clip swaps the base -A r for the clipped surrogate and leaves the penalties alone:
    # the loss is ppo_clip's plus the same four penalties as in the known answer above.
    loss_clip, _ = sent_2x6(kl_cov_ratio=0.3, sent_ppo_clip=True)
    ppo, _ = get_policy_loss("ppo_clip")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        config=PolicyLossConfig(),
    )
    assert loss_clip.item() == pytest.approx(ppo.item() + (0.14 + 0.10 + 0.02 + 0.03) / 9, rel=1e-6)


# edge cases ----------------------------------------------------------------------------------


def test_no_valid_token_gives_zero_loss_for_every_loss():
    empty = torch.zeros(2, 6, dtype=torch.bool)
    for name in POLICY_LOSSES:
        loss, metrics = get_policy_loss(name)(
            log_prob=LOG_PROB,
            old_log_prob=OLD_LOG_PROB,
            advantages=ADV,
            response_mask=empty,
            entropy=ENTROPY,
            config=PolicyLossConfig(),
        )
        assert loss.item() == 0.0, name
        assert all(math.isfinite(v) for v in metrics_to_floats(metrics).values()), name


def test_one_valid_token():
    # |L| = max(1, floor(0.8)) = 1, k' = 1: the token is the largest-Cov token (Cov = 0) and
    # gets c_hi; it cannot also be the smallest. loss = -A e^-d + beta c_hi d with A = 1, d = 0.1
    one = torch.zeros(2, 6, dtype=torch.bool)
    one[0, 0] = True
    loss, metrics = get_policy_loss("sent")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=one,
        entropy=ENTROPY,
        config=PolicyLossConfig(),
    )
    assert loss.item() == pytest.approx(-math.exp(-0.1) + 0.1 * 2.0 * 0.1, rel=1e-6)
    assert metrics_to_floats(metrics)["n_penalised"] == 1


def test_all_entropies_equal_selects_the_first_valid_tokens():
    # ties go to the lower flat index: L = the first floor(0.8 * 9) = 7 valid tokens in row order
    equal = torch.ones(2, 6)
    low = select_top(equal, MASK, torch.tensor(7.0), largest=False)
    expected = MASK.clone()
    expected[1, 2] = expected[1, 3] = False  # valid tokens 8 and 9 in row-major order
    assert low.tolist() == expected.tolist()
    _, metrics = get_policy_loss("sent")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=equal,
        config=PolicyLossConfig(),
    )
    assert metrics_to_floats(metrics)["n_low_entropy"] == 7


def test_fraction_zero_and_one():
    # f = 0: |L| = max(1, 0) = 1, the single lowest-entropy token (1,0) (entropy .05)
    _, m0 = sent_2x6(low_entropy_fraction=0.0)
    m0 = metrics_to_floats(m0)
    assert m0["n_low_entropy"] == 1 and m0["entropy_low_set"] == pytest.approx(0.05)
    # f = 1: L = all 9 valid tokens; no entropy needed at all
    _, m1 = get_policy_loss("sent")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=None,
        config=PolicyLossConfig(low_entropy_fraction=1.0),
    )
    assert metrics_to_floats(m1)["n_low_entropy"] == 9


def test_sent_needs_entropy():
    with pytest.raises(ValueError, match="entropy"):
        get_policy_loss("sent")(
            log_prob=LOG_PROB,
            old_log_prob=OLD_LOG_PROB,
            advantages=ADV,
            response_mask=MASK,
            config=PolicyLossConfig(),
        )


def test_first_on_policy_update_has_no_penalty():
    # METHOD.md §3: |log pi - log pi_old| is 0 on the first update after a rollout
    loss, _ = get_policy_loss("sent")(
        log_prob=LOG_PROB,
        old_log_prob=LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=ENTROPY,
        config=PolicyLossConfig(kl_cov_ratio=0.5, ppo_kl_coef=10.0),
    )
    assert loss.item() == pytest.approx(-(5 - 4) / 9, rel=1e-6)


def test_entropy_mask_known_answer():
    # q = 0.2: max(1, floor(1.8)) = 1 token of highest entropy: (0,1) with entropy .9, A = 1, d = .2
    # ppo_clip on it: ratio e^-.2 = .8187 inside [0.8, 1.2] -> loss -0.8187, averaged over 1 token
    loss, metrics = get_policy_loss("entropy_mask")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=ENTROPY,
        config=PolicyLossConfig(),
    )
    assert loss.item() == pytest.approx(-math.exp(-0.2), rel=1e-6)
    assert metrics_to_floats(metrics)["n_selected"] == 1
    # q = 0.5: floor(4.5) = 4 highest: .9 (0,1), .8 (1,2), .6 (1,3), .5 (0,3)
    loss4, _ = get_policy_loss("entropy_mask")(
        log_prob=LOG_PROB,
        old_log_prob=OLD_LOG_PROB,
        advantages=ADV,
        response_mask=MASK,
        entropy=ENTROPY,
        config=PolicyLossConfig(entropy_mask_fraction=0.5),
    )
    # (1,2): A = -1, ratio e^-.8 = .449 < .8: max(-A ratio, -A clip) = max(.449, .8) = .8;
    #        dual clip: min(3, .8) = .8
    # (1,3): ratio e^-.9 = .407 -> .8 as well; (0,3): A = 1, ratio e^-.4 = .670: max(-.670, -.8) = -.670
    expected = (-math.exp(-0.2) + 0.8 + 0.8 - math.exp(-0.4)) / 4
    assert loss4.item() == pytest.approx(expected, rel=1e-6)


# helpers -------------------------------------------------------------------------------------


def test_reference_kl_and_entropy_bonus():
    ref = LOG_PROB + 0.5
    loss, metrics = reference_kl_loss(LOG_PROB, ref, MASK, coef=0.001, kind="k3")
    # k3 with ref - lp = 0.5 everywhere: e^0.5 - 0.5 - 1 = 0.148721
    assert metrics["ref_kl"].item() == pytest.approx(math.exp(0.5) - 1.5, rel=1e-6)
    assert loss.item() == pytest.approx(0.001 * (math.exp(0.5) - 1.5), rel=1e-6)
    bonus, m = entropy_bonus(ENTROPY, MASK, coef=0.01)
    mean_h = float(ENTROPY[MASK].mean())
    assert m["entropy"].item() == pytest.approx(mean_h) and bonus.item() == pytest.approx(-0.01 * mean_h)


def test_registry():
    assert {"ppo_clip", "kl_cov", "clip_cov", "entropy_mask", "sent"} <= set(POLICY_LOSSES)
    with pytest.raises(ValueError, match="unknown policy loss"):
        get_policy_loss("grpo_v2")
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("sent")(lambda **_: None)


@pytest.mark.parametrize(
    "bad",
    [
        {"kl_cov_ratio": 0.0},
        {"low_entropy_fraction": 1.5},
        {"clip_ratio_c": 1.0},
        {"clip_cov_lb": 6.0},
        {"ppo_kl_coef": -1.0},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        PolicyLossConfig(**bad)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_with_global_counts_add_up_to_the_mini_batch_loss(mode):
    # the local engine splits a mini-batch into micro-batches and passes the mini-batch's token /
    # sequence counts, as verl does across ranks: the micro losses must sum to the full loss
    log_prob, old, adv, mask, ent = random_batch(11, B=8, T=20)
    full, _ = ours("ppo_clip", (log_prob, old, adv, mask, ent), loss_agg_mode=mode)
    counts = {"global_batch_num_tokens": int(mask.sum()), "global_batch_size": int(mask.any(-1).sum())}
    parts = [
        get_policy_loss("ppo_clip")(
            log_prob=log_prob[i : i + 3],
            old_log_prob=old[i : i + 3],
            advantages=adv[i : i + 3],
            response_mask=mask[i : i + 3],
            config=PolicyLossConfig(loss_agg_mode=mode, **counts),
        )[0]
        for i in range(0, 8, 3)
    ]
    torch.testing.assert_close(sum(parts), full)
