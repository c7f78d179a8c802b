"""The policy update of one GRPO step on the local engine: the old and reference
log-probabilities, then for each PPO epoch and mini-batch the loss of every micro-batch,
accumulated gradients, clipping and one optimizer step.

Each micro-batch's loss is its share of the mini-batch's token (or sequence) count, as verl
normalises across ranks, so accumulation gives the mini-batch's loss exactly. Until the first
optimizer step after the rollout the policy is the rollout policy, and the old log-probabilities
are the current ones, detached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sent.config_training import TrainingConfig
from sent.engines.step_metrics import EntropyTally, PhaseClock
from sent.entropy import token_entropy
from sent.losses import PolicyLossConfig, entropy_bonus, metrics_to_floats, reference_kl_loss
from sent.models import response_logits_and_logprobs, token_logprobs


@dataclass(frozen=True)
class MicroBatch:
    """The sequences of one forward/backward, and the step's tensors they index."""

    rows: torch.Tensor
    batch: dict[str, Any]
    train_mask: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None
    adv_tokens: torch.Tensor
    n_tokens: int
    """Trained tokens of the whole mini-batch (each micro-batch's loss is its share of them)."""
    on_policy: bool
    """No optimizer step yet since the rollout: the policy is the rollout policy."""


class PolicyUpdate:
    """Trains the policy on one rollout batch (`sent.engines.rollout.rollout_batch`)."""

    def __init__(
        self,
        *,
        policy: torch.nn.Module,
        train_model: Callable[..., Any],
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loss_fn: Callable[..., tuple[torch.Tensor, dict[str, Any]]],
        loss_cfg: PolicyLossConfig,
        training: TrainingConfig,
        device: torch.device,
    ) -> None:
        self.policy, self.train_model, self.reference = policy, train_model, reference
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loss_fn, self.loss_cfg, self.training, self.device = loss_fn, loss_cfg, training, device

    def train(
        self, batch: dict[str, Any], n_prompts: int, clock: PhaseClock
    ) -> tuple[dict[str, list[float]], list[float], EntropyTally]:
        """Every PPO epoch and mini-batch of the step; (per-micro-batch metrics, gradient norms,
        the policy's token entropy over every response)."""
        training, group_size = self.training, self.training.group_size
        response_mask = batch["attention"][:, batch["prompt_len"] :].bool()
        with clock("old_logprobs"):
            # with one PPO epoch the first mini-batch is trained before any optimizer step only;
            # with more, every mini-batch is trained again after one and needs its old log-probs
            on_policy_rows = training.mini_batch_size * group_size if training.ppo_epochs == 1 else 0
            old_logp, ref_logp = self.old_logprobs(batch, on_policy_rows)
        adv_tokens = batch["advantages"].to(self.device)[:, None].expand_as(old_logp)
        train_mask = response_mask & batch["keep"].to(self.device)[:, None]
        prompts_per_mini = training.mini_batch_size
        sums: dict[str, list[float]] = {}
        grad_norms: list[float] = []
        entropy = EntropyTally()
        stepped = False  # an optimizer step since the rollout (before it, the policy is the rollout policy)
        self.policy.train()
        for _epoch in range(training.ppo_epochs):
            for m0 in range(0, n_prompts, prompts_per_mini):
                seq = torch.arange(m0 * group_size, min(n_prompts, m0 + prompts_per_mini) * group_size)
                mini_mask = train_mask[seq]
                n_tokens, n_seqs = int(mini_mask.sum()), int(mini_mask.any(-1).sum())
                if n_tokens == 0:
                    continue
                cfg = PolicyLossConfig(
                    **{**self.loss_cfg.model_dump(), "global_batch_num_tokens": n_tokens, "global_batch_size": n_seqs}
                )
                self.optimizer.zero_grad(set_to_none=True)
                mini_pg_loss = torch.zeros(
                    (), device=self.device
                )  # micro-batch losses are shares of the mini-batch loss: they add up
                for u0 in range(0, len(seq), training.micro_batch_size):
                    micro = MicroBatch(
                        seq[u0 : u0 + training.micro_batch_size],
                        batch,
                        train_mask,
                        old_logp,
                        ref_logp,
                        adv_tokens,
                        n_tokens,
                        on_policy=not stepped,
                    )
                    loss, metrics = self.micro_step(micro, cfg, clock, entropy)
                    mini_pg_loss = mini_pg_loss + loss
                    for k, v in metrics_to_floats(metrics).items():
                        sums.setdefault(k, []).append(v)
                sums.setdefault("pg_loss", []).append(float(mini_pg_loss))
                sums.setdefault("n_trained_tokens", []).append(n_tokens)  # what the losses' counts are shares of
                with clock("optimizer"):
                    grad_norms.append(
                        float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), training.grad_clip))
                    )
                    self.optimizer.step()
                    self.scheduler.step()
                stepped = True
        self.policy.eval()
        return sums, grad_norms, entropy

    def old_logprobs(self, batch: dict[str, Any], on_policy_rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rollout policy's log-probabilities and the reference model's (None without the
        reference KL loss), for the sequences a loss reads: those of groups ``filter_groups``
        keeps (0 elsewhere). The first ``on_policy_rows`` sequences are only ever trained
        on-policy, where the old log-probabilities are the current ones (`_micro_step`), so a
        recomputation skips them too; the sampler's cover every sequence at no cost."""
        ids, mask, prompt_len, rows = (
            batch["input_ids"],
            batch["attention"],
            batch["prompt_len"],
            self.training.micro_batch_size,
        )
        need = batch["keep"].to(self.device).clone()
        groups = batch["groups"].to(self.device)  # a group's rows share their prompt: one prompt forward
        with torch.no_grad():
            old = batch["sampled_logp"]
            if old is None:
                old = torch.zeros(mask[:, prompt_len:].shape, device=self.device)
                need_old = need.clone()
                need_old[:on_policy_rows] = False
                rest = need_old.nonzero().squeeze(-1)
                if len(rest):
                    old[rest] = token_logprobs(
                        self.policy, ids[rest], mask[rest], prompt_len, chunk_rows=rows, groups=groups[rest]
                    )
            ref = None
            if self.reference is not None:
                ref = torch.zeros(mask[:, prompt_len:].shape, device=self.device)
                rows_needed = need.nonzero().squeeze(-1)
                if len(rows_needed):
                    ref[rows_needed] = token_logprobs(
                        self.reference,
                        ids[rows_needed],
                        mask[rows_needed],
                        prompt_len,
                        chunk_rows=rows,
                        groups=groups[rows_needed],
                    )
        return old, ref

    def micro_step(
        self, micro: MicroBatch, cfg: PolicyLossConfig, clock: PhaseClock, entropy: EntropyTally
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward, loss and backward of one micro-batch; (its share of the policy loss, metrics).

        Only sequences with a trained token (``train_mask``) go through the forward with gradient
        and the backward: the others (groups left out by ``filter_groups``) add nothing to the
        loss or its gradient, and every loss selects among trained tokens only, in index order,
        so dropping them changes no token's selection. Their entropy, which the
        ``policy_entropy`` metric covers, comes from a forward without gradient.
        """
        training = self.training
        ids, mask, prompt_len = micro.batch["input_ids"], micro.batch["attention"], micro.batch["prompt_len"]
        groups = micro.batch["groups"].to(self.device)
        trained = micro.train_mask[micro.rows].any(-1)
        kept, dropped = micro.rows[trained], micro.rows[~trained]
        if len(dropped):
            with clock("forward"), torch.no_grad():
                logits, _ = response_logits_and_logprobs(
                    self.policy, ids[dropped], mask[dropped], prompt_len, groups[dropped]
                )
                entropy.add(token_entropy(logits), mask[dropped, prompt_len:])
        if not len(kept):
            # no trained token: the loss is 0, and its metrics are those of an all-masked row
            row = micro.rows[:1]
            old = micro.old_logp[row]
            _, metrics = self.loss_fn(
                log_prob=old,
                old_log_prob=old,
                advantages=micro.adv_tokens[row],
                response_mask=micro.train_mask[row],
                entropy=torch.zeros_like(old),
                config=cfg,
            )
            if micro.ref_logp is not None:
                metrics.update(
                    reference_kl_loss(
                        old,
                        micro.ref_logp[row],
                        micro.train_mask[row],
                        coef=training.ref_kl_coef,
                        kind=training.ref_kl_kind,
                    )[1]
                )
            return torch.zeros((), device=self.device), metrics
        with clock("forward"):
            logits, logp = response_logits_and_logprobs(
                self.train_model, ids[kept], mask[kept], prompt_len, groups[kept]
            )
            with torch.set_grad_enabled(training.entropy_coeff > 0):  # a gradient only for the entropy bonus
                ent = token_entropy(logits)
            m = micro.train_mask[kept]
            # on-policy, the old log-probabilities are the current ones exactly: the ratio is 1 and
            # |log pi - log pi_old| is 0 with a zero gradient (METHOD.md §3), where the sampled or
            # recomputed ones would differ by float rounding and give that term a random sign
            old_logp = logp.detach() if micro.on_policy else micro.old_logp[kept]
            loss, metrics = self.loss_fn(
                log_prob=logp,
                old_log_prob=old_logp,
                advantages=micro.adv_tokens[kept],
                response_mask=m,
                entropy=ent.detach(),
                config=cfg,
            )
            pg_loss = loss.detach()
            scale = m.sum() / max(micro.n_tokens, 1)  # share of the mini-batch in this micro-batch
            if micro.ref_logp is not None:
                kl_loss, kl_m = reference_kl_loss(
                    logp, micro.ref_logp[kept], m, coef=training.ref_kl_coef, kind=training.ref_kl_kind
                )
                loss = loss + kl_loss * scale
                metrics.update(kl_m)
            if training.entropy_coeff > 0:
                bonus, _ = entropy_bonus(ent, m, coef=training.entropy_coeff)
                loss = loss + bonus * scale
        with clock("backward"):
            loss.backward()
        entropy.add(ent.detach(), mask[kept, prompt_len:])
        return pg_loss, metrics
