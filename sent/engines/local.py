"""The local GRPO engine: staged training on one machine (CPU or one GPU), with any registered
policy loss. It uses the same losses (`sent.losses`), advantages (`sent.advantages`), rewards
(`sent.rewards.compute_score`) and curriculum shards (`sent.data_contract`) as the verl engine.

One step, in the order of the GRPO algorithm:

1. the next ``train_batch_size`` prompts of the stage (shuffled per epoch with the run seed, or
   in SE order; the whole order is fixed up front, so a resumed run needs only the step number).
   With ``curriculum.mode: online`` each epoch after the first is ordered by the online SE of
   the problems' latest rollouts (`sent.online_se`): each step clusters its G answers per
   problem with curation's judge, logs ``online_se_*`` metrics and rewrites the stage's
   ``online_se.parquet``; checkpoints keep the order so far and that history;
2. G responses per prompt from the current weights (the ``hf`` sampler, seeded by the step);
3. rewards by `compute_score`; GRPO advantages per group (optionally dropping groups whose
   rewards are all equal: they carry no signal but dilute the token mean);
4. old log-probabilities: by default the sampler's own, recorded during generation from the same
   weights (``old_logprobs: recompute`` runs a separate no-grad pass instead; the two agree to
   float rounding), and the reference model's when the reference KL loss is on. Until the
   step's first optimizer step the policy is the rollout policy, and the old log-probabilities
   are the current ones, detached (ratio 1, ``|log pi - log pi_old| = 0``);
5. for each PPO epoch and mini-batch: log-probabilities and exact token entropy of the current
   policy, the configured policy loss plus reference KL and entropy bonus, gradient
   accumulation over micro-batches (each micro-batch normalised by the mini-batch's token or
   sequence count, as verl does across ranks), gradient clipping, an AdamW step.

SENT's token selection therefore happens per micro-batch, as in verl; set
``micro_batch_size`` to the mini-batch's sequence count for mini-batch scope.

Stages: stage 1 starts from ``model.path``, stage K+1 from stage K's final weights; the
reference model is the stage's starting model; the optimiser restarts (METHOD.md §2).
Checkpoints (every ``save_every`` steps and at the end) hold Hugging Face weights and tokenizer,
optimiser, scheduler and torch RNG tensors (``state.pt``, loaded with ``weights_only=True``, so a
run directory from elsewhere cannot run code when resumed), and the step, metrics and the other
RNG states as JSON (``state.json``), written to a temporary directory and renamed;
``resume: auto`` continues from the newest one and gives the same metrics as an uninterrupted
run. One trainer per stage directory (a lock names the holder); on SIGTERM/SIGINT the stage
checkpoints after the current step and stops (`sent.interrupt`). Retraining a finished stage is
an explicit choice (``fresh=True``).
The engine reports metrics to a callback and never imports MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sent import interrupt
from sent.advantages import grpo_advantages
from sent.config import SentConfig, TrainingConfig, loss_config, training_seed
from sent.data_contract import json_safe, load_curriculum
from sent.engines.resume_state import differences, floats, rng_state_json, set_rng_state
from sent.engines.stage import (
    FINAL,
    MetricsCallback,
    StageResult,
    TrainingError,
    clear_finished,
    stage_dir,
    stage_steps,
    start_model_for,
    write_history,
    write_summary,
)
from sent.engines.step_metrics import TIME_PREFIX, EntropyTally, EntropyWatch, PhaseClock
from sent.entropy import token_entropy
from sent.integrity import directory_problem, seal_directory
from sent.locks import exclusive
from sent.losses import (
    PolicyLossConfig,
    entropy_bonus,
    get_policy_loss,
    metrics_to_floats,
    reference_kl_loss,
)
from sent.models import load_model, load_tokenizer, response_logits_and_logprobs, token_logprobs
from sent.online_se import HISTORY_FILE, OnlineOrder, score_group
from sent.rewards import compute_score, warm_up_verifier
from sent.sampling.base import Completion, derived_seed
from sent.sampling.hf import HFSampler
from sent.semantic import configured_judge

logger = logging.getLogger(__name__)
_COUNTS = frozenset({"n_low_entropy", "n_penalised", "n_selected", "n_valid_tokens", "n_trained_tokens"})
CHECKPOINTS = "checkpoints"


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


def positive_samples(advantages: torch.Tensor) -> torch.Tensor:
    """``(rows,)`` mask of the responses that train under ``train_samples: positive``: those with a
    positive advantage (right answers in a group that is not all right)."""
    return advantages > 0


def score_rollout(rows: list[dict], outs: list[list[Completion]], training: TrainingConfig) -> list[dict[str, Any]]:
    """`compute_score` of every completion, in rollout order. A group repeats answers, so each
    distinct response text of a prompt is graded once (grading is a pure function of the text)."""
    scores = []
    for row, completions in zip(rows, outs, strict=True):
        graded: dict[str, dict[str, Any]] = {}
        for c in completions:
            if c.text not in graded:
                graded[c.text] = compute_score(
                    row["data_source"],
                    c.text,
                    row["reward_model"]["ground_truth"],
                    row["extra_info"],
                    correct_score=training.correct_score,
                    incorrect_score=training.incorrect_score,
                    timeout=training.reward_timeout_s,
                )
            scores.append(graded[c.text])
    return scores


def _batch_order(n_rows: int, cfg: SentConfig) -> tuple[np.ndarray, int]:
    """Row indices for every step of the stage, and the number of steps."""
    training = cfg.training
    steps = stage_steps(cfg, n_rows)
    epochs = math.ceil(steps * training.train_batch_size / n_rows) + 1
    rng = np.random.default_rng(training_seed(cfg))
    order = [rng.permutation(n_rows) if training.shuffle else np.arange(n_rows) for _ in range(epochs)]
    return np.concatenate(order), steps


class LocalEngine:
    """Train one curriculum stage; see the module docstring."""

    def __init__(
        self,
        cfg: SentConfig,
        *,
        stage: int,
        curriculum_dir: str | Path,
        run_dir: str | Path,
        max_steps: int | None = None,
        callback: MetricsCallback | None = None,
        fresh: bool = False,
        progress: bool = True,
        start_model: str | Path | None = None,
    ) -> None:
        self.cfg, self.stage = cfg, stage
        self.training = cfg.training
        self.run_dir = Path(run_dir)
        self.out = stage_dir(self.run_dir, stage)
        self.callback, self.progress = callback, progress
        clear_finished(self.out, stage, fresh=fresh)
        # an explicit start (a stage K-1 trained elsewhere, e.g. a reused pipeline run) wins over the run's own
        self.start_model = str(start_model) if start_model is not None else start_model_for(cfg, self.run_dir, stage)
        table = load_curriculum(curriculum_dir, stage)
        if table.num_rows == 0:
            raise TrainingError(f"curriculum stage {stage} in {curriculum_dir} has no problems")
        self.rows = table.to_pylist()
        self.order, self.total_steps = _batch_order(len(self.rows), cfg)
        self.online: OnlineOrder | None = None
        if cfg.curriculum.mode == "online":  # epochs after the first follow the rollouts' SE
            self.online = OnlineOrder(
                [r["extra_info"]["semantic_entropy"] for r in self.rows],
                [r["extra_info"]["id"] for r in self.rows],
                batch_size=self.training.train_batch_size,
                seed=training_seed(cfg),
                shuffle=self.training.shuffle,
                filter_zero=cfg.curriculum.online_filter,
            )
        if max_steps is not None:
            self.total_steps = min(self.total_steps, max_steps)
        self.loss_fn = get_policy_loss(self.training.loss)
        self.loss_cfg = loss_config(cfg)

    # ---------------------------------------------------------------- model, optimiser, state

    def _build(self) -> None:
        model = self.cfg.model
        self.tokenizer = load_tokenizer(self.start_model, trust_remote_code=model.trust_remote_code)
        self.policy = load_model(
            self.start_model, device=model.device, dtype=model.dtype, trust_remote_code=model.trust_remote_code
        )
        self.device = next(self.policy.parameters()).device
        # the training forward may be compiled; sampling and checkpoints use the module itself
        self.train_model = torch.compile(self.policy, dynamic=True) if self.training.compile else self.policy
        self.reference = None
        if self.training.ref_kl_coef > 0:
            self.reference = load_model(
                self.start_model, device=model.device, dtype=model.dtype, trust_remote_code=model.trust_remote_code
            )
            self.reference.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=self.training.lr,
            betas=self.training.betas,
            weight_decay=self.training.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)  # constant (paper)
        warm_up_verifier()
        self.sampler = HFSampler(
            self.policy, self.tokenizer, batch_size=self.training.rollout_batch_size, progress=False
        )
        self.judge = configured_judge(self.cfg.semantic) if self.online is not None else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.entropy_watch = EntropyWatch(self.training.entropy_collapse_fraction)

    def _checkpoints(self) -> list[Path]:
        root = self.out / CHECKPOINTS
        return sorted(p for p in root.glob("step-*") if (p / "state.pt").is_file()) if root.is_dir() else []

    @functools.cached_property
    def _identity(self) -> dict[str, Any]:
        """What this stage's result depends on: a checkpoint made under anything else is not this
        stage's (where work is saved or how often is left out: it changes no step)."""
        placement = {"save_every", "resume", "entropy_collapse_fraction", "val_every", "verl"}
        rows = hashlib.sha256(json.dumps(self.rows, sort_keys=True, default=str).encode()).hexdigest()
        return json_safe(
            {
                "training": self.training.model_dump(mode="json", exclude=placement),
                "model": self.cfg.model.model_dump(mode="json"),
                "prompt": self.cfg.prompt.model_dump(mode="json"),
                "seed": training_seed(self.cfg),
                "curriculum_rows": rows,
                "start_model": self.start_model,
                **({"online_order": self.cfg.online_order()} if self.online is not None else {}),
            }
        )

    def _intact_checkpoint(self) -> Path | None:
        """The newest checkpoint whose files are the ones that were written (`sent.integrity`);
        a damaged one is passed over for the one before it (its steps are recomputed)."""
        checkpoints = self._checkpoints()
        for ckpt in reversed(checkpoints):
            if not (ckpt / "state.json").is_file():
                raise TrainingError(
                    f"{ckpt} was written by an older version (no state.json) and is not loaded; "
                    "retrain the stage with --fresh (fresh=True)"
                )
            problem = directory_problem(ckpt)
            if problem is None:
                return ckpt
            logger.warning("stage %d: %s; not resumed from it", self.stage, problem)
        if checkpoints:
            raise TrainingError(
                f"stage {self.stage}: no intact checkpoint in {self.out / CHECKPOINTS} "
                f"({directory_problem(checkpoints[-1])}); retrain the stage with --fresh (fresh=True)"
            )
        return None

    def _resume(self) -> None:
        if self.training.resume != "auto":
            return
        ckpt = self._intact_checkpoint()
        if ckpt is None:
            return
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        differs = differences(state.get("identity", {}), self._identity)
        if differs:
            raise TrainingError(
                f"stage {self.stage}: the checkpoint {ckpt} was made with other settings ({'; '.join(differs[:5])}); "
                "resuming would mix two runs. Retrain the stage with --fresh (fresh=True), which keeps the old run "
                "beside it, or rerun with the settings it was made with"
            )
        tensors = torch.load(ckpt / "state.pt", weights_only=True, map_location="cpu")
        from transformers import AutoModelForCausalLM

        weights = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=next(self.policy.parameters()).dtype)
        self.policy.load_state_dict(weights.state_dict())
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        set_rng_state(state["rng"], tensors["torch_rng"])
        self.step, self.history = state["step"], [floats(m) for m in state["history"]]
        self.entropy_watch = EntropyWatch(self.training.entropy_collapse_fraction, **state["entropy_watch"])
        if self.online is not None:
            self.online.restore(state["online_order"], pq.read_table(ckpt / HISTORY_FILE))
        logger.info("stage %d: resumed from %s (step %d)", self.stage, ckpt, self.step)

    def _write_history(self) -> None:
        """``metrics.jsonl``: one line per step so far (rewritten atomically, so that after a
        resume it holds exactly the steps of the resumed history)."""
        write_history(self.out, self.history)
        if self.online is not None:
            self.online.write_history(self.out / HISTORY_FILE)

    def _save(self, final: bool = False) -> Path:
        name = FINAL if final else f"{CHECKPOINTS}/step-{self.step:06d}"
        target = self.out / name
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.policy.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        if final:
            summary = {
                "stage": self.stage,
                "steps": self.step,
                "start_model": self.start_model,
                "loss": self.training.loss,
                "last_metrics": self.history[-1] if self.history else {},
            }
            write_summary(tmp, summary)
        else:
            tensors = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(tensors, tmp / "state.pt")
            state = {
                "step": self.step,
                "identity": self._identity,
                "history": json_safe(self.history),
                "rng": rng_state_json(),
                "entropy_watch": {"start": self.entropy_watch.start, "warned": self.entropy_watch.warned},
            }
            if self.online is not None:
                state["online_order"] = self.online.state()
                self.online.write_history(tmp / HISTORY_FILE)
            (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
            seal_directory(tmp)  # written last: a checkpoint without it was never finished
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target

    # ---------------------------------------------------------------- one step

    def _rollout(self, rows: list[dict], clock: PhaseClock) -> dict[str, Any]:
        training, group_size = self.training, self.training.group_size
        reuse = training.old_logprobs == "sampling"
        with clock("generate"):
            outs = self.sampler.generate(
                [[dict(m) for m in r["prompt"]] for r in rows],
                n=group_size,
                temperature=training.temperature,
                top_p=training.top_p,
                max_new_tokens=training.max_response_tokens,
                seed=derived_seed(training_seed(self.cfg), self.step),
                logprobs=reuse,
            )
        completions = [c for group in outs for c in group]
        with clock("scoring"):
            scores = score_rollout(rows, outs, training)
        with clock("batching"):
            prompt_len = max(len(c.prompt_token_ids) for c in completions)
            response_len = max(1, max(c.n_tokens for c in completions))
            n_seqs, width = len(completions), prompt_len + response_len
            input_ids = torch.full((n_seqs, width), self.tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((n_seqs, width), dtype=torch.long)
            sampled_logp = torch.zeros((n_seqs, response_len)) if reuse else None
            for i, c in enumerate(completions):  # [left-padded prompt | right-padded response]
                p, r = c.prompt_token_ids, c.token_ids
                input_ids[i, prompt_len - len(p) : prompt_len] = torch.tensor(p, dtype=torch.long)
                input_ids[i, prompt_len : prompt_len + len(r)] = torch.tensor(r, dtype=torch.long)
                attention[i, prompt_len - len(p) : prompt_len + len(r)] = 1
                if sampled_logp is not None:
                    sampled_logp[i, : len(r)] = torch.tensor(c.token_logprobs)
            rewards = torch.tensor([s["score"] for s in scores])
            groups = torch.arange(len(rows)).repeat_interleave(group_size)
            adv = grpo_advantages(rewards, groups, norm_by_std=training.norm_adv_by_std)
            group_rewards = rewards.view(-1, group_size)
            signal = group_rewards.max(1).values != group_rewards.min(1).values
            keep = signal[groups] if training.filter_groups else torch.ones(n_seqs, dtype=torch.bool)
            if training.train_samples == "positive":
                keep = keep & positive_samples(adv)
        return {
            "input_ids": input_ids.to(self.device),
            "attention": attention.to(self.device),
            "prompt_len": prompt_len,
            "sampled_logp": sampled_logp.to(self.device) if sampled_logp is not None else None,
            "advantages": adv,
            "rewards": rewards,
            "acc": torch.tensor([float(s["acc"]) for s in scores]),
            "signal": signal,
            "keep": keep,
            "groups": groups,
            "reward_undecided": sum(s["undecided"] for s in scores) / n_seqs,
            "texts": [c.text for c in completions],
        }

    def _old_logprobs(self, batch: dict[str, Any], on_policy_rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
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

    def _micro_step(
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

    def _online_se(self, batch: dict[str, Any], places: list[tuple[int, int]], clock: PhaseClock) -> dict[str, float]:
        """Record each problem's online SE from this step's rollouts (step = the one being taken)."""
        assert self.online is not None and self.judge is not None
        g = self.training.group_size
        texts, acc = batch["texts"], batch["acc"].tolist()
        with clock("online_se"):
            scores = [
                score_group(texts[i * g : (i + 1) * g], acc[i * g : (i + 1) * g], self.judge, self.cfg.semantic)
                for i in range(len(places))
            ]
        return self.online.record(self.step + 1, places, scores)

    def _grpo_step(self, rows: list[dict], places: list[tuple[int, int]] | None = None) -> dict[str, float]:
        """One GRPO step on ``rows``; ``places`` (``(row, epoch)`` of each) in online mode."""
        training, group_size = self.training, self.training.group_size
        clock = PhaseClock()
        t0 = time.perf_counter()
        batch = self._rollout(rows, clock)
        t_sample = time.perf_counter() - t0
        online = self._online_se(batch, places, clock) if places is not None else {}
        response_mask = batch["attention"][:, batch["prompt_len"] :].bool()
        with clock("old_logprobs"):
            # with one PPO epoch the first mini-batch is trained before any optimizer step only;
            # with more, every mini-batch is trained again after one and needs its old log-probs
            on_policy_rows = training.mini_batch_size * group_size if training.ppo_epochs == 1 else 0
            old_logp, ref_logp = self._old_logprobs(batch, on_policy_rows)
        adv_tokens = batch["advantages"].to(self.device)[:, None].expand_as(old_logp)
        train_mask = response_mask & batch["keep"].to(self.device)[:, None]
        prompts_per_mini = training.mini_batch_size
        sums: dict[str, list[float]] = {}
        grad_norms: list[float] = []
        entropy = EntropyTally()
        stepped = False  # an optimizer step since the rollout (before it, the policy is the rollout policy)
        self.policy.train()
        for _epoch in range(training.ppo_epochs):
            for m0 in range(0, len(rows), prompts_per_mini):
                seq = torch.arange(m0 * group_size, min(len(rows), m0 + prompts_per_mini) * group_size)
                mini_mask = train_mask[seq]
                n_tokens, n_seqs = int(mini_mask.sum()), int(mini_mask.any(-1).sum())
                if n_tokens == 0:
                    continue
                cfg = PolicyLossConfig(
                    **{**self.loss_cfg.__dict__, "global_batch_num_tokens": n_tokens, "global_batch_size": n_seqs}
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
                    loss, metrics = self._micro_step(micro, cfg, clock, entropy)
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
        seconds = time.perf_counter() - t0
        n_resp_tokens = int(response_mask.sum())
        signal = batch["signal"]
        acc_groups = batch["acc"].view(-1, group_size).mean(1)
        out = {
            "reward_mean": batch["rewards"].mean().item(),
            "accuracy": batch["acc"].mean().item(),
            "reward_undecided": batch["reward_undecided"],
            "groups_with_signal": signal.float().mean().item(),
            "accuracy_groups_with_signal": acc_groups[signal].mean().item() if signal.any() else float("nan"),
            "policy_entropy": entropy.mean(),
            "response_length": response_mask.sum(1).float().mean().item(),
            "grad_norm": float(np.mean(grad_norms)) if grad_norms else 0.0,
            "step_time": seconds,
            "sampling_time": t_sample,
            "tokens_per_s": n_resp_tokens / seconds,
            "lr": self.scheduler.get_last_lr()[0],
            **{f"{TIME_PREFIX}{phase}": s for phase, s in clock.seconds.items()},
            **online,
        }
        for k, v in sums.items():  # token counts add up over micro-batches; the rest is averaged
            out[k] = float(np.sum(v)) if k in _COUNTS else float(np.mean(v))
        if "pg_clipfrac" in out:
            out["clip_fraction"] = out.pop("pg_clipfrac")
        return out

    def _watch_entropy(self, metrics: dict[str, float]) -> None:
        h = metrics["policy_entropy"]
        collapsed, first = self.entropy_watch.update(h)
        metrics["entropy_collapse"] = float(collapsed)
        if first:
            logger.warning(
                "stage %d step %d: policy entropy %.4f fell below %.0f%% of its start value %.4f (entropy collapse)",
                self.stage,
                self.step,
                h,
                100 * self.training.entropy_collapse_fraction,
                self.entropy_watch.start,
            )

    # ---------------------------------------------------------------- the stage

    def run(self) -> StageResult:
        """Train the stage, holding its directory's lock (one trainer per stage)."""
        with exclusive(self.out, f"training of stage {self.stage}"):
            return self._run()

    def _run(self) -> StageResult:
        from tqdm.auto import tqdm

        self._build()
        self._resume()
        batch_size = self.training.train_batch_size
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"stage {self.stage}", disable=not self.progress)
        while self.step < self.total_steps:
            if self.online is None:
                rows = [self.rows[i] for i in self.order[self.step * batch_size : (self.step + 1) * batch_size]]
                metrics = self._grpo_step(rows)
            else:
                places = self.online.batch(self.step)
                metrics = self._grpo_step([self.rows[i] for i, _ in places], places)
            self.step += 1
            self._watch_entropy(metrics)
            metrics["step"] = float(self.step)
            self.history.append(metrics)
            self._write_history()
            if self.callback is not None:
                self.callback(self.step, metrics)
            bar.update(1)
            bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", H=f"{metrics['policy_entropy']:.3f}")
            # read once: a signal landing between a save decision and the check would stop the
            # stage without its last step's checkpoint (it did, in the interrupt test)
            stopping = interrupt.requested()
            if (self.step % self.training.save_every == 0 or stopping) and self.step < self.total_steps:
                self._save()  # on a stop, nothing of the finished steps is lost
            if stopping and self.step < self.total_steps:  # after the last step: the final save first
                interrupt.check(f"after step {self.step} of stage {self.stage} (checkpointed; a rerun resumes)")
        bar.close()
        final = self._save(final=True)
        shutil.rmtree(self.out / CHECKPOINTS, ignore_errors=True)
        logger.info("stage %d finished after %d steps: %s", self.stage, self.step, final)
        return StageResult(self.stage, final, self.step, self.history, self.start_model)
