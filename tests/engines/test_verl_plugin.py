"""Our losses inside verl: entry-point registration in a fresh process and the adapter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from sent.losses import PolicyLossConfig, get_policy_loss, metrics_to_floats

pytest.importorskip("verl", reason="needs the verl package")
from verl.workers.config.actor import ActorConfig
from verl.workers.config.actor import PolicyLossConfig as VerlPolicyLossConfig


@pytest.mark.slow
def test_import_verl_alone_registers_sent_in_a_fresh_process():
    # verl loads entry points on import and logs load errors only at DEBUG: assert the result.
    code = textwrap.dedent(
        """
        import verl
        from verl.trainer.ppo.core_algos import get_policy_loss_fn, POLICY_LOSS_REGISTRY
        fn = get_policy_loss_fn("sent")
        print(sorted(k for k in POLICY_LOSS_REGISTRY if k.startswith("sent")))
        print(fn.__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "['sent', 'sent_clip_cov', 'sent_entropy_mask', 'sent_kl_cov', 'sent_ppo_clip']"
    assert lines[-1] == "verl_sent_loss"


def _batch():
    g = torch.Generator().manual_seed(7)
    lp = -torch.rand(6, 20, generator=g) * 3
    old = lp + torch.randn(6, 20, generator=g) * 0.2
    adv = torch.randn(6, 1, generator=g).expand(6, 20).contiguous()
    mask = torch.arange(20)[None] < torch.randint(3, 21, (6, 1), generator=g)
    return lp, old, adv, mask


def test_adapter_reads_verl_config_and_uses_surprisal_entropy():
    from sent.engines.verl_plugin import make_verl_policy_loss, policy_loss_config_from_verl

    cfg = ActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=4,
        ppo_micro_batch_size_per_gpu=2,
        rollout_n=1,
        clip_ratio_high=0.28,
        policy_loss=VerlPolicyLossConfig(loss_mode="sent", kl_cov_ratio=0.05, ppo_kl_coef=0.2),
    )
    ours_cfg = policy_loss_config_from_verl(cfg, "seq-mean-token-mean")
    assert (ours_cfg.kl_cov_ratio, ours_cfg.ppo_kl_coef, ours_cfg.clip_ratio_high) == (0.05, 0.2, 0.28)
    assert ours_cfg.loss_agg_mode == "seq-mean-token-mean"
    assert ours_cfg.low_entropy_fraction == PolicyLossConfig().low_entropy_fraction  # verl's config has none

    lp, old, adv, mask = _batch()
    loss, metrics = make_verl_policy_loss("sent")(old, lp, adv, mask.float(), "seq-mean-token-mean", cfg)
    direct, direct_metrics = get_policy_loss("sent")(
        log_prob=lp, old_log_prob=old, advantages=adv, response_mask=mask, entropy=-lp, config=ours_cfg
    )
    torch.testing.assert_close(loss, direct)
    assert metrics == {f"actor/{k}": v for k, v in metrics_to_floats(direct_metrics).items()}
    # an exact entropy, when given, replaces the surprisal
    exact = torch.rand(6, 20)
    loss_exact, _ = make_verl_policy_loss("sent")(old, lp, adv, mask.float(), "token-mean", cfg, entropy=exact)
    direct_exact, _ = get_policy_loss("sent")(
        log_prob=lp,
        old_log_prob=old,
        advantages=adv,
        response_mask=mask,
        entropy=exact,
        config=policy_loss_config_from_verl(cfg, "token-mean"),
    )
    torch.testing.assert_close(loss_exact, direct_exact)


def test_adapter_passes_data_parallel_context():
    from sent.engines.verl_plugin import policy_loss_config_from_verl

    cfg = ActorConfig(strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1)
    cfg.global_batch_info.update({"dp_size": 8, "batch_num_tokens": 4096, "global_batch_size": 64})
    ours = policy_loss_config_from_verl(cfg, "token-mean")
    assert (ours.dp_size, ours.global_batch_num_tokens, ours.global_batch_size) == (8, 4096, 64)


def test_adapter_rejects_rollout_correction_weights():
    from sent.engines.verl_plugin import make_verl_policy_loss

    lp, old, adv, mask = _batch()
    cfg = ActorConfig(strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1)
    with pytest.raises(ValueError, match="rollout-correction"):
        make_verl_policy_loss("sent")(old, lp, adv, mask.float(), "token-mean", cfg, torch.ones_like(lp))


def test_compute_score_as_verl_reward_manager_calls_it():
    # verl's reward manager calls the custom function with keywords, from worker threads
    from concurrent.futures import ThreadPoolExecutor

    from sent.rewards import compute_score

    calls = [
        {
            "data_source": "math500",
            "solution_str": "so \\boxed{\\frac{1}{2}}",
            "ground_truth": "0.5",
            "extra_info": {"index": 0},
        },
        {
            "data_source": "math500",
            "solution_str": "so \\boxed{3}",
            "ground_truth": "0.5",
            "extra_info": None,
        },
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda kw: compute_score(**kw), calls))
    assert [r["score"] for r in results] == [1.0, -1.0]
