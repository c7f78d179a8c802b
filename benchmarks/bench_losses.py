"""SENT loss vs verl's KL-Cov at (B, T) = (64, 2048) on CPU, forward + backward.

Target (issue 2): sent <= 1.3x verl kl_cov. Run alone: a concurrent process doubles step times
on 2 cores. Prints ratios measured in this run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved_ratio

from sent.losses import PolicyLossConfig, get_policy_loss

B, T = 64, 2048


def main() -> None:
    from verl.trainer.ppo import core_algos
    from verl.workers.config.actor import ActorConfig
    from verl.workers.config.actor import PolicyLossConfig as VerlPolicyLossConfig

    torch.manual_seed(0)
    log_prob = (-torch.rand(B, T) * 3).requires_grad_(True)
    old = log_prob.detach() + torch.randn(B, T) * 0.1
    adv = torch.randn(B, 1).expand(B, T).contiguous()
    mask = torch.arange(T)[None] < torch.randint(T // 4, T + 1, (B, 1))
    entropy = torch.rand(B, T) * 2
    verl_cfg = ActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=4,
        ppo_micro_batch_size_per_gpu=2,
        rollout_n=1,
        policy_loss=VerlPolicyLossConfig(loss_mode="kl_cov"),
    )
    ours_cfg = PolicyLossConfig()
    verl_kl_cov = core_algos.get_policy_loss_fn("kl_cov")

    def run_verl():
        loss, _ = verl_kl_cov(old, log_prob, adv, mask.float(), "token-mean", verl_cfg)
        loss.backward()
        log_prob.grad = None

    def run(name):
        def f():
            loss, _ = get_policy_loss(name)(
                log_prob=log_prob,
                old_log_prob=old,
                advantages=adv,
                response_mask=mask,
                entropy=entropy,
                config=ours_cfg,
            )
            loss.backward()
            log_prob.grad = None

        return f

    print(f"shape (B, T) = ({B}, {T}), {int(mask.sum())} valid tokens, torch threads {torch.get_num_threads()}")
    print("forward + backward; each ratio is the median over interleaved rounds against verl's kl_cov")
    for name in ("sent", "kl_cov", "ppo_clip", "clip_cov", "entropy_mask"):
        base, t, ratio = interleaved_ratio(run_verl, run(name))
        print(f"sent.losses {name:<13}{t * 1e3:7.2f} ms  verl kl_cov {base * 1e3:6.2f} ms  ratio {ratio:5.2f}x")


if __name__ == "__main__":
    main()
