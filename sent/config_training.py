"""The ``training`` section of a run's config: staged GRPO's rollouts, optimiser, reward and
policy loss, and the verl engine's resources (``training.verl``). The schema's other sections
are in `sent.config`.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sent.config_base import FOLLOW, Section
from sent.loss_config import BUILTIN_LOSSES, PolicyLossConfig


def known_losses() -> set[str]:
    """The built-in losses and any a plugin registered in `sent.losses` (when it is imported)."""
    registry = getattr(sys.modules.get("sent.losses"), "POLICY_LOSSES", {})
    return set(BUILTIN_LOSSES) | set(registry)


class VerlConfig(Section):
    """The verl engine (`sent.engines.verl`): resources and verl-only settings of each stage's job."""

    device: Literal["cuda", "cpu"] = Field(
        "cuda",
        description="cpu: verl's real trainer without GPUs (sent.engines.verl_cpu), to check a config; not for speed",
    )
    nnodes: int = Field(1, gt=0, description="machines of the job (trainer.nnodes)")
    n_gpus_per_node: int = Field(8, gt=0, description="GPUs per machine (trainer.n_gpus_per_node)")
    ray_address: str | None = Field(
        None, description="None: main_ppo starts a local Ray; else `ray job submit --address` (e.g. http://head:8265)"
    )
    rollout_name: Literal["vllm", "sglang"] = Field("vllm", description="verl's rollout engine")
    rollout_tp: int = Field(1, gt=0, description="tensor parallel size of the rollout engine")
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1, description="the rollout engine's share of GPU memory")
    use_dynamic_bsz: bool = Field(True, description="token-budget micro-batches (then micro_batch_size is unused)")
    max_token_len_per_gpu: int = Field(16384, gt=0, description="dynamic batches: tokens per GPU per forward pass")
    param_offload: bool = Field(False, description="FSDP: keep parameters in CPU memory between uses")
    optimizer_offload: bool = Field(False, description="FSDP: keep the optimiser state in CPU memory")
    entropy_source: Literal["exact", "surprisal", "auto"] = Field(
        "exact", description="token entropy for the loss: exact (calculate_entropy=true) or surprisal"
    )
    val_files: list[str] | None = Field(
        None, description="verl validation parquet files; default: the evaluation benchmarks, converted"
    )
    val_limit: int | None = Field(256, gt=0, description="problems per benchmark in the default validation set")
    merge_backend: Literal["fsdp", "megatron"] = Field(
        "fsdp", description="checkpoint format the model merger reads into Hugging Face weights"
    )
    trainer_module: str = Field("verl.trainer.main_ppo", description="run as `python -m`; e.g. a verl recipe's main")
    merger_module: str = Field("verl.model_merger", description="run as `python -m <module> merge ...`")
    extra_overrides: list[str] = Field(default_factory=list, description="further Hydra overrides, applied last")


class TrainingConfig(Section):
    """Staged GRPO with a policy loss: the rollouts, the optimiser and the reward."""

    engine: Literal["local", "verl"] = Field(
        "local", description="local: one process (CPU or one GPU, sent.engines.local); verl: verl on Ray"
    )
    seed: int | None = Field(
        None,
        description="seed of the batch order and the rollouts; None: the run's seed. An ablation sets it per "
        "replicate, so replicates share the curation and the evaluation's sampling seeds",
    )
    verl: VerlConfig = Field(VerlConfig(), description="the verl engine's resources and verl-only settings")
    loss: str = Field("sent", description="registered policy loss (sent.losses)")
    policy_loss: PolicyLossConfig = Field(
        PolicyLossConfig(), description="coefficients of the policy losses (sent.loss_config.PolicyLossConfig)"
    )
    group_size: int = Field(
        8, ge=2, description="G: responses per prompt in a rollout (GRPO's advantage compares a group: at least 2)"
    )
    train_batch_size: int = Field(256, gt=0, description="prompts per step")
    mini_batch_size: int = Field(128, gt=0, description="prompts per optimiser step")
    micro_batch_size: int = Field(4, gt=0, description="sequences per forward/backward")
    ppo_epochs: int = Field(1, gt=0, description="passes over each step's rollouts")
    epochs_per_stage: float = Field(
        5, gt=0, description="passes over a stage's problems: steps = floor(epochs * problems / train_batch_size)"
    )
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate (constant)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    grad_clip: float = Field(1.0, gt=0, description="clip the gradient's global norm to this")
    max_prompt_tokens: int = Field(
        FOLLOW,
        gt=0,
        description="longest chat prompt a rollout takes (verl: max_prompt_length); default and lower bound: "
        "data.max_prompt_tokens, the longest prompt curation accepts",
    )
    max_response_tokens: int = Field(
        FOLLOW,
        gt=0,
        description="response budget of a rollout, in tokens; default: sampling.max_new_tokens, the budget the "
        "semantic entropy was measured at",
    )
    rollout_batch_size: int = Field(
        FOLLOW,
        gt=0,
        description="local engine: prompts per generate call of a rollout (its sampling seeds are per call); "
        "default: sampling.batch_size",
    )
    temperature: float = Field(1.0, gt=0, description="rollout sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="rollout nucleus sampling")
    ref_kl_coef: float = Field(0.001, ge=0, description="reference KL loss weight (0 disables)")
    ref_kl_kind: Literal["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"] = Field(
        "low_var_kl", description="estimator of the reference KL (verl's kl_penalty names; low_var_kl is k3, clamped)"
    )
    entropy_coeff: float = Field(0.0, ge=0, description="weight of an entropy bonus (0 disables)")
    norm_adv_by_std: bool = Field(True, description="GRPO: divide advantages by the group's reward std")
    filter_groups: bool = Field(
        False, description="leave groups whose G rewards are all equal out of the update (they carry no signal)"
    )
    train_samples: Literal["all", "positive"] = Field(
        "all",
        description="local engine: which responses carry the policy gradient: all (GRPO), or only those with a "
        "positive advantage (positive sample reinforcement, arXiv 2506.01347: the collapse regime's positive control)",
    )
    correct_score: float = Field(1.0, description="reward of a right final answer")
    reward_timeout_s: float = Field(
        5.0, gt=0, description="grading budget of one response; undecided in time = wrong (counted as reward_undecided)"
    )
    incorrect_score: float = Field(-1.0, description="reward of a wrong or missing answer (paper: -1)")
    old_logprobs: Literal["sampling", "recompute"] = Field(
        "sampling",
        description="local engine: the rollout's old log-probabilities from the sampler's own forward passes "
        "(no extra pass; equal to a recomputation to float rounding) or from a separate no-grad pass",
    )
    compile: bool = Field(
        False,
        description="local engine: torch.compile the policy's training forward (dynamic shapes; a one-off compile "
        "of about a minute; about 10 % faster a step for the toy model on CPU, see docs/engine-speed.md)",
    )
    shuffle: bool = Field(True, description="shuffle within a stage (False keeps SE order)")
    save_every: int = Field(50, gt=0, description="steps between checkpoints (and one at the end of a stage)")
    resume: Literal["auto", "never"] = Field(
        "auto", description="auto: continue a stage from its newest checkpoint; never: start it again"
    )
    entropy_collapse_fraction: float = Field(0.5, gt=0, lt=1, description="warn below this share of start entropy")
    val_every: int = Field(10, gt=0, description="validation frequency (verl test_freq)")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, loss: str) -> str:
        known = known_losses()
        if loss not in known:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(sorted(known))}")
        return loss

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"AdamW's betas must each be in [0, 1), got {list(betas)}")
        return betas

    @model_validator(mode="after")
    def _batches_divide(self) -> TrainingConfig:
        if self.train_batch_size % self.mini_batch_size:
            raise ValueError("train_batch_size must be a multiple of mini_batch_size")
        if self.engine != "local":  # local-engine settings that verl would silently ignore
            if self.train_samples != "all":
                raise ValueError(
                    f"train_samples={self.train_samples!r} is a local-engine setting; the verl engine trains all"
                )
            if self.old_logprobs != "sampling":
                raise ValueError(
                    f"old_logprobs={self.old_logprobs!r} is a local-engine setting; verl recomputes them its own way"
                )
            if self.compile:
                raise ValueError("compile is a local-engine setting; verl's actor has its own (use_torch_compile)")
        return self
