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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sent import interrupt
from sent.config import SentConfig, loss_config, training_seed
from sent.data_contract import json_safe, load_curriculum
from sent.engines.checkpoints import CHECKPOINTS, intact_checkpoint, step_checkpoint, write_atomically
from sent.engines.resume_state import differences, floats, rng_state_json, set_rng_state
from sent.engines.rollout import rollout_batch, score_rollout
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
from sent.engines.step_metrics import TIME_PREFIX, EntropyWatch, PhaseClock
from sent.engines.update import PolicyUpdate
from sent.locks import exclusive
from sent.losses import (
    get_policy_loss,
)
from sent.models import load_model, load_tokenizer
from sent.online_se import HISTORY_FILE, OnlineOrder, score_group
from sent.rewards import warm_up_verifier
from sent.sampling.base import Settings, derived_seed
from sent.sampling.hf import HFSampler
from sent.semantic import configured_judge

logger = logging.getLogger(__name__)
_COUNTS = frozenset({"n_low_entropy", "n_penalised", "n_selected", "n_valid_tokens", "n_trained_tokens"})


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
        warm_up_verifier(workers=self.cfg.semantic.verify_workers)
        self.rollout = Settings(
            n=self.training.group_size,
            temperature=self.training.temperature,
            top_p=self.training.top_p,
            max_new_tokens=self.training.max_response_tokens,
            logprobs=self.training.old_logprobs == "sampling",  # the old log-probs come from the sampler
        )
        self.sampler = HFSampler(
            self.policy, self.tokenizer, batch_size=self.training.rollout_batch_size, progress=False
        )
        self.update = PolicyUpdate(
            policy=self.policy,
            train_model=self.train_model,
            reference=self.reference,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            loss_fn=self.loss_fn,
            loss_cfg=self.loss_cfg,
            training=self.training,
            device=self.device,
        )
        self.judge = configured_judge(self.cfg.semantic) if self.online is not None else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.entropy_watch = EntropyWatch(self.training.entropy_collapse_fraction)

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

    def _resume(self) -> None:
        if self.training.resume != "auto":
            return
        ckpt = intact_checkpoint(self.out, self.stage)
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
        """The final weights, or a step checkpoint that a resume continues from exactly."""
        if final:
            summary = {
                "stage": self.stage,
                "steps": self.step,
                "start_model": self.start_model,
                "loss": self.training.loss,
                "last_metrics": self.history[-1] if self.history else {},
            }

            def fill(tmp: Path) -> None:
                self.policy.save_pretrained(str(tmp))
                self.tokenizer.save_pretrained(str(tmp))
                write_summary(tmp, summary)

            return write_atomically(self.out / FINAL, fill, seal=False)

        def fill_step(tmp: Path) -> None:
            self.policy.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
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

        return write_atomically(step_checkpoint(self.out, self.step), fill_step, seal=True)

    # ---------------------------------------------------------------- one step

    def _rollout(self, rows: list[dict], clock: PhaseClock) -> dict[str, Any]:
        training = self.training
        reuse = training.old_logprobs == "sampling"
        with clock("generate"):
            outs = self.sampler.generate(
                [[dict(m) for m in r["prompt"]] for r in rows],
                self.rollout,
                seed=derived_seed(training_seed(self.cfg), self.step),
            )
        with clock("scoring"):
            scores = score_rollout(rows, outs, training)
        with clock("batching"):
            return rollout_batch(
                outs,
                scores,
                training,
                pad_token_id=self.tokenizer.pad_token_id,
                device=self.device,
                with_logprobs=reuse,
            )

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
        group_size = self.training.group_size
        clock = PhaseClock()
        t0 = time.perf_counter()
        batch = self._rollout(rows, clock)
        t_sample = time.perf_counter() - t0
        online = self._online_se(batch, places, clock) if places is not None else {}
        response_mask = batch["attention"][:, batch["prompt_len"] :].bool()
        sums, grad_norms, entropy = self.update.train(batch, len(rows), clock)
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
