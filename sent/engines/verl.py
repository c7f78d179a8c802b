"""The distributed engine: each curriculum stage is one run of verl's own trainer
(``python -m verl.trainer.main_ppo``: Ray, FSDP, vLLM rollouts) with our losses, verl unmodified.

`plan_stage` turns our typed config for one stage into verl's Hydra overrides (verl 0.9.x):
GRPO advantages, rollout ``n``/temperature/top_p, batch sizes, lr, lengths, the policy loss
(``loss_mode=sent`` with `SentPolicyLossConfig` as ``_target_`` so that SENT's coefficients are
real fields), exact token entropy (``calculate_entropy=true``, see `sent.engines.verl_plugin`),
the reference KL loss, the stage's shards as an explicit file list (verl takes no directories or
globs), our reward function, nodes/GPUs, MLflow logging into our run tree, checkpoints and
``resume_mode``; under ``curriculum.mode: online``, our dataset class (`sent.engines.verl_online`)
in place of verl's shuffled one. `compose_verl_config` and `check_verl_config` validate the overrides the way
``main_ppo`` reads them: Hydra's compose API on verl's packaged ``ppo_trainer`` config, then
verl's dataclasses.

`sent.engines.verl_run.run_stage` launches the planned job and merges its weights.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sent.config import SentConfig, loss_config, training_seed
from sent.engines.stage import FINAL, stage_dir, stage_steps
from sent.errors import SentError
from sent.grading.verify import WORKERS_ENV
from sent.online_stream import StreamSettings
from sent.redaction import split_credentials

logger = logging.getLogger(__name__)
TRAINER_MODULE = "verl.trainer.main_ppo"
PLUGIN_MODULE = "sent.engines.verl_plugin"
POLICY_LOSS_TARGET = f"{PLUGIN_MODULE}.SentPolicyLossConfig"
ONLINE_DATASET = ("sent.engines.verl_online", "OnlineSEDataset")


class VerlEngineError(SentError, RuntimeError):
    """A verl stage that cannot be planned or did not finish (the message carries the log's tail)."""


@dataclass(frozen=True)
class StagePlan:
    """Everything about one stage's verl job, decided before it starts (printed by ``--dry-run``)."""

    stage: int
    start_model: str
    train_files: list[Path]
    curated: bool
    val_files: list[Path]
    out_dir: Path
    checkpoint_dir: Path
    merged_dir: Path
    experiment_name: str
    total_steps: int | None
    overrides: list[str]
    rows: int | None = None  # the stage's problems (None before curation)
    batch_size: int = 1
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    """Variables the local job's process gets and nothing shows: not `command`, `shell`, Hydra."""
    ray_address: str | None = None
    trainer_module: str = TRAINER_MODULE
    online: StreamSettings | None = None
    """``curriculum.mode: online``: the stage's stream (`sent.engines.verl_online` in the trainer)."""

    @property
    def command(self) -> list[str]:
        trainer = [sys.executable, "-m", self.trainer_module, *self.overrides]
        if self.ray_address is None:
            return trainer
        # The job's driver gets the environment on its command line (`env K=V ...`): a job runtime
        # env that sets the variables which main_ppo's ray.init also sets for the workers
        # (ray_kwargs.ray_init.runtime_env.env_vars) is refused by Ray ("Failed to merge the Job's
        # runtime env ... because of a conflict").
        submit = ["ray", "job", "submit", f"--address={self.ray_address}", "--"]
        env = ["env", *(f"{k}={v}" for k, v in sorted(self.env.items()))]
        return [*submit, *env, "python", "-m", self.trainer_module, *self.overrides]

    def shell(self) -> str:
        """The command as a shell line (with its environment when run locally), one override per line."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()) if self.ray_address is None)
        cmd = self.command
        head = cmd.index(self.trainer_module) + 1  # `... -m verl.trainer.main_ppo` on the first line
        first = " ".join(shlex.quote(x) for x in cmd[:head])
        return " \\\n    ".join([(env + " " if env else "") + first, *(shlex.quote(x) for x in cmd[head:])])


# --------------------------------------------------------------------------------------------
# configuration -> Hydra overrides
# --------------------------------------------------------------------------------------------


def hydra_value(value: Any) -> str:
    """A Python value as Hydra override syntax: strings quoted (paths, ids), lists bracketed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def reward_function_path() -> str:
    import sent.rewards

    return str(Path(sent.rewards.__file__).resolve())


def stage_train_files(curriculum_dir: Path, stage: int) -> tuple[list[Path], bool, int | None]:
    """The stage's shards from the manifest (and its row count), or, before curation, the path of
    the first shard the stage will have (for ``--dry-run``)."""
    from sent.data_contract import MANIFEST, load_manifest, stage_files

    if (curriculum_dir / MANIFEST).is_file():
        manifest = load_manifest(curriculum_dir, only=f"stage-{stage}/")
        files = stage_files(curriculum_dir, stage, manifest)
        rows = manifest["curriculum"]["stages"][stage - 1]["count"]
        return [f.resolve() for f in files], True, rows
    return [(curriculum_dir / f"stage-{stage}" / "part-00000.parquet").resolve()], False, None


def total_steps(cfg: SentConfig, n_rows: int | None) -> int | None:
    """Optimizer steps of a stage, as the local engine counts them (``epochs_per_stage`` may be fractional)."""
    return None if n_rows is None else stage_steps(cfg, n_rows)


def verl_epochs(cfg: SentConfig, n_rows: int | None, steps: int | None) -> int:
    """verl's ``total_epochs``: enough passes of its dataloader (``n_rows // batch`` steps each,
    the last partial batch dropped) for the stage's steps, which ``total_training_steps`` caps."""
    if n_rows is None or steps is None or n_rows < cfg.training.train_batch_size:
        return max(1, math.ceil(cfg.training.epochs_per_stage))
    return max(1, math.ceil(steps / (n_rows // cfg.training.train_batch_size)))


def plan_stage(
    cfg: SentConfig,
    *,
    stage: int,
    curriculum_dir: str | Path,
    run_dir: str | Path,
    start_model: str,
    mlflow: tuple[str, str] | None = None,
    max_steps: int | None = None,
) -> StagePlan:
    """The verl job of curriculum stage ``stage`` (see the module docstring). ``mlflow`` is
    ``(tracking_uri, run_id)`` of the stage's MLflow run, which verl's own logger then writes to;
    ``max_steps`` caps the stage (smoke runs)."""
    from sent.engines.verl_plugin import verl_name

    t, v = cfg.training, cfg.training.verl
    if Path(start_model).exists():  # a local model: absolute, for Ray workers and cluster jobs elsewhere
        start_model = str(Path(start_model).resolve())
    curriculum_dir, run_dir = Path(curriculum_dir), Path(run_dir).resolve()
    out = stage_dir(run_dir, stage)
    train_files, curated, n_rows = stage_train_files(curriculum_dir, stage)
    val_files = [Path(f).resolve() for f in v.val_files] if v.val_files else [out / "verl" / "val.parquet"]
    steps = total_steps(cfg, n_rows)
    if max_steps is not None:
        steps = max_steps if steps is None else min(steps, max_steps)
    experiment = f"{run_dir.name}-stage-{stage}"
    pl = t.policy_loss
    clip_low, clip_high = loss_config(cfg).clip_range()
    micro = t.micro_batch_size
    overrides = [
        # data: the stage's shards in curriculum order within the file list; verl shuffles per epoch
        f"data.train_files={hydra_value([str(f) for f in train_files])}",
        f"data.val_files={hydra_value([str(f) for f in val_files])}",
        "data.prompt_key=prompt",
        f"data.max_prompt_length={t.max_prompt_tokens}",
        f"data.max_response_length={t.max_response_tokens}",
        f"data.train_batch_size={t.train_batch_size}",
        # online: our dataset shuffles (epoch 1) and orders (later epochs) by itself
        f"data.shuffle={hydra_value(t.shuffle and cfg.curriculum.mode != 'online')}",
        f"data.seed={training_seed(cfg)}",
        "data.filter_overlong_prompts=true",
        "data.truncation=error",
        f"data.trust_remote_code={hydra_value(cfg.model.trust_remote_code)}",
        # GRPO
        "algorithm.adv_estimator=grpo",
        f"algorithm.norm_adv_by_std_in_grpo={hydra_value(t.norm_adv_by_std)}",
        "algorithm.use_kl_in_reward=false",
        # the policy: model, optimiser, batches
        f"actor_rollout_ref.model.path={hydra_value(start_model)}",
        f"actor_rollout_ref.model.trust_remote_code={hydra_value(cfg.model.trust_remote_code)}",
        "actor_rollout_ref.model.use_remove_padding=true",
        f"actor_rollout_ref.model.external_lib={PLUGIN_MODULE}",  # workers import (and register) our losses
        f"actor_rollout_ref.actor.optim.lr={t.lr!r}",
        f"actor_rollout_ref.actor.optim.weight_decay={t.weight_decay!r}",
        f"actor_rollout_ref.actor.optim.betas={hydra_value(list(t.betas))}",
        # verl 0.9's engines clip with optim.clip_grad (workers/engine/fsdp/transformer_impl.py, the
        # optimizer step); actor.grad_clip is declared in the actor config but read by nothing
        f"actor_rollout_ref.actor.optim.clip_grad={t.grad_clip!r}",
        f"actor_rollout_ref.actor.grad_clip={t.grad_clip!r}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={t.mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.actor.use_dynamic_bsz={hydra_value(v.use_dynamic_bsz)}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={v.max_token_len_per_gpu}",
        f"actor_rollout_ref.actor.ppo_epochs={t.ppo_epochs}",
        f"actor_rollout_ref.actor.shuffle={hydra_value(t.shuffle)}",
        f"actor_rollout_ref.actor.fsdp_config.param_offload={hydra_value(v.param_offload)}",
        f"actor_rollout_ref.actor.fsdp_config.optimizer_offload={hydra_value(v.optimizer_offload)}",
        # the loss: ours, with exact token entropy
        f"actor_rollout_ref.actor.loss_agg_mode={pl.loss_agg_mode}",
        f"actor_rollout_ref.actor.clip_ratio={pl.clip_ratio!r}",
        f"actor_rollout_ref.actor.clip_ratio_low={clip_low!r}",
        f"actor_rollout_ref.actor.clip_ratio_high={clip_high!r}",
        f"actor_rollout_ref.actor.clip_ratio_c={pl.clip_ratio_c!r}",
        f"actor_rollout_ref.actor.entropy_coeff={t.entropy_coeff!r}",
        f"actor_rollout_ref.actor.calculate_entropy={hydra_value(v.entropy_source != 'surprisal')}",
        f"actor_rollout_ref.actor.use_kl_loss={hydra_value(t.ref_kl_coef > 0)}",
        f"actor_rollout_ref.actor.kl_loss_coef={t.ref_kl_coef!r}",
        f"actor_rollout_ref.actor.kl_loss_type={t.ref_kl_kind}",
        f"actor_rollout_ref.actor.policy_loss._target_={POLICY_LOSS_TARGET}",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={verl_name(t.loss)}",
        f"actor_rollout_ref.actor.policy_loss.kl_cov_ratio={pl.kl_cov_ratio!r}",
        f"actor_rollout_ref.actor.policy_loss.ppo_kl_coef={pl.ppo_kl_coef!r}",
        f"actor_rollout_ref.actor.policy_loss.clip_cov_ratio={pl.clip_cov_ratio!r}",
        f"actor_rollout_ref.actor.policy_loss.clip_cov_lb={pl.clip_cov_lb!r}",
        f"actor_rollout_ref.actor.policy_loss.clip_cov_ub={pl.clip_cov_ub!r}",
        # SENT's own fields exist only on our subclass: added with '+'
        f"+actor_rollout_ref.actor.policy_loss.low_entropy_fraction={pl.low_entropy_fraction!r}",
        f"+actor_rollout_ref.actor.policy_loss.high_cov_coef={pl.high_cov_coef!r}",
        f"+actor_rollout_ref.actor.policy_loss.low_cov_coef={pl.low_cov_coef!r}",
        f"+actor_rollout_ref.actor.policy_loss.sent_ppo_clip={hydra_value(pl.sent_ppo_clip)}",
        f"+actor_rollout_ref.actor.policy_loss.low_entropy_penalty={pl.low_entropy_penalty}",
        f"+actor_rollout_ref.actor.policy_loss.entropy_mask_fraction={pl.entropy_mask_fraction!r}",
        f"+actor_rollout_ref.actor.policy_loss.entropy_source={v.entropy_source}",
        # rollouts
        f"actor_rollout_ref.rollout.name={v.rollout_name}",
        f"actor_rollout_ref.rollout.n={t.group_size}",
        f"actor_rollout_ref.rollout.temperature={t.temperature!r}",
        f"actor_rollout_ref.rollout.top_p={t.top_p!r}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={v.rollout_tp}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={v.gpu_memory_utilization!r}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.fsdp_config.param_offload={hydra_value(v.param_offload)}",
        # reward: our grader, called by verl's reward manager
        f"reward.custom_reward_function.path={hydra_value(reward_function_path())}",
        "reward.custom_reward_function.name=compute_score",
        f"+reward.custom_reward_function.reward_kwargs.correct_score={t.correct_score!r}",
        f"+reward.custom_reward_function.reward_kwargs.incorrect_score={t.incorrect_score!r}",
        f"+reward.custom_reward_function.reward_kwargs.timeout={t.reward_timeout_s!r}",
        # trainer: resources, logging, checkpoints
        f"trainer.nnodes={v.nnodes}",
        f"trainer.n_gpus_per_node={v.n_gpus_per_node}",
        "trainer.logger=[console,mlflow]",
        f"trainer.project_name={hydra_value(cfg.tracking.experiment)}",
        f"trainer.experiment_name={hydra_value(experiment)}",
        f"trainer.default_local_dir={hydra_value(str(out / 'verl' / 'checkpoints'))}",
        "trainer.resume_mode=auto",
        # Hydra's own log and resolved config beside the checkpoints (its default: ./outputs/<date>)
        f"hydra.run.dir={hydra_value(str(out / 'verl' / 'hydra'))}",
        f"trainer.save_freq={t.save_every}",
        f"trainer.test_freq={t.val_every}",
        "trainer.val_before_train=false",
        f"trainer.total_epochs={verl_epochs(cfg, n_rows, steps)}",
    ]
    online = None
    if cfg.curriculum.mode == "online":  # our dataset serves the rows in the online order
        online = StreamSettings.of(cfg, out, training_seed(cfg))
        overrides += [
            "data.dataloader_num_workers=0",  # __getitem__ in the trainer, in order
            f"data.custom_cls.path={hydra_value('pkg://' + ONLINE_DATASET[0])}",
            f"data.custom_cls.name={ONLINE_DATASET[1]}",
            f"+data.sent_online={hydra_value(online.to_json())}",
        ]
    if steps is not None:
        overrides.append(f"trainer.total_training_steps={steps}")
    # the reward workers load only our reward function: the grading setting reaches them this way
    env = {"TOKENIZERS_PARALLELISM": "true", WORKERS_ENV: str(cfg.semantic.verify_workers)}
    if v.device == "cpu":  # verl's real trainer without GPUs (a check, not for speed)
        from sent.engines import verl_cpu

        env.update(verl_cpu.environment())
        overrides += verl_cpu.overrides(local_ray=v.ray_address is None)
    secret_env: dict[str, str] = {}
    if mlflow is not None:
        uri, secret_env = split_credentials(mlflow[0])
        env.update({"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": mlflow[1]})
        if secret_env and v.ray_address is not None:
            logger.warning(
                "the tracking URI's credentials are not sent to the Ray cluster at %s (a job's command line and "
                "runtime env are stored in the clear); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                "in the cluster's environment",
                v.ray_address,
            )
            secret_env = {}
    for key, value in sorted(env.items()):  # the Ray workers get the same environment
        overrides.append(f"+ray_kwargs.ray_init.runtime_env.env_vars.{key}={hydra_value(value)}")
    overrides += v.extra_overrides
    return StagePlan(
        stage=stage,
        start_model=start_model,
        train_files=train_files,
        curated=curated,
        val_files=val_files,
        out_dir=out,
        checkpoint_dir=out / "verl" / "checkpoints",
        merged_dir=out / FINAL,
        experiment_name=experiment,
        total_steps=steps,
        overrides=overrides,
        rows=n_rows,
        batch_size=t.train_batch_size,
        env=env,
        secret_env=secret_env,
        ray_address=v.ray_address,
        trainer_module=v.trainer_module,
        online=online,
    )


def compose_verl_config(overrides: list[str]):
    """verl's ``ppo_trainer`` config with ``overrides``, composed with Hydra as ``main_ppo`` does."""
    import verl.trainer
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = str(Path(verl.trainer.__file__).parent / "config")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(overrides))


def check_verl_config(config) -> dict[str, Any]:
    """verl's own checks of a composed config (``validate_config``: batch sizes against GPUs, ...),
    then its conversion into verl's dataclasses (their ``__post_init__`` checks); returns them."""
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    validate_config(config, use_reference_policy=bool(config.actor_rollout_ref.actor.use_kl_loss), use_critic=False)
    return {
        "actor": omega_conf_to_dataclass(config.actor_rollout_ref.actor),
        "rollout": omega_conf_to_dataclass(config.actor_rollout_ref.rollout),
        "algorithm": omega_conf_to_dataclass(config.algorithm),
    }


# --------------------------------------------------------------------------------------------
# running a stage
# --------------------------------------------------------------------------------------------


def write_validation_set(cfg: SentConfig, path: Path) -> Path:
    """The evaluation benchmarks (first ``val_limit`` problems each) as a verl dataset: the
    held-out validation that ``test_freq`` runs on."""
    from sent.data_contract import CURRICULUM_SCHEMA, write_rows
    from sent.evaluation import benchmark_path, load_benchmark

    ev, limit = cfg.evaluation, cfg.training.verl.val_limit
    toy_dir = cfg.toy.data_dir if cfg.toy is not None else None
    rows = []
    for name in ev.benchmarks:
        for i, p in enumerate(load_benchmark(benchmark_path(name, ev.data_dir, toy_dir))[:limit]):
            rows.append(
                {
                    "data_source": name,
                    "prompt": cfg.prompt.messages(p.problem),
                    "ability": cfg.data.ability,
                    "reward_model": {"style": "rule", "ground_truth": p.answer},
                    "extra_info": {"index": i, "id": p.id},
                }
            )
    write_rows(rows, path, CURRICULUM_SCHEMA)
    return path
