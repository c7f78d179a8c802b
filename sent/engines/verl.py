"""The distributed engine: each curriculum stage is one run of verl's own trainer
(``python -m verl.trainer.main_ppo``: Ray, FSDP, vLLM rollouts) with our losses, verl unmodified.

`plan_stage` turns our typed config for one stage into verl's Hydra overrides (verl 0.9.x):
GRPO advantages, rollout ``n``/temperature/top_p, batch sizes, lr, lengths, the policy loss
(``loss_mode=sent`` with `SentPolicyLossConfig` as ``_target_`` so that SENT's coefficients are
real fields), exact token entropy (``calculate_entropy=true``, see `sent.engines.verl_plugin`),
the reference KL loss, the stage's shards as an explicit file list (verl takes no directories or
globs), our reward function, nodes/GPUs, MLflow logging into our run tree, checkpoints and
``resume_mode``. `compose_verl_config` and `check_verl_config` validate the overrides the way
``main_ppo`` reads them: Hydra's compose API on verl's packaged ``ppo_trainer`` config, then
verl's dataclasses.

`run_stage` launches the job (a subprocess with local Ray, or ``ray job submit`` to a cluster),
streams its log into ours, and merges the final FSDP checkpoint into Hugging Face weights
(``python -m verl.model_merger merge``) that the next stage starts from. ``resume_mode=auto``
makes a retry of the same stage continue from its last checkpoint; a deliberately new run gets
a new directory (and so a new experiment name).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sent import interrupt
from sent.config import SentConfig, loss_config, training_seed
from sent.data_contract import json_safe
from sent.engines.stage import FINAL, clear_finished, stage_dir, stage_steps, write_history, write_summary
from sent.errors import SentError
from sent.ray_address import check_ray_address
from sent.redaction import redact_text, split_credentials

logger = logging.getLogger(__name__)
TRAINER_MODULE = "verl.trainer.main_ppo"
PLUGIN_MODULE = "sent.engines.verl_plugin"
POLICY_LOSS_TARGET = f"{PLUGIN_MODULE}.SentPolicyLossConfig"
_LOG_TAIL = 200
_STEP_LINE = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")


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
        f"data.shuffle={hydra_value(t.shuffle)}",
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
        f"trainer.total_epochs={max(1, math.ceil(t.epochs_per_stage))}",
    ]
    if steps is not None:
        overrides.append(f"trainer.total_training_steps={steps}")
    env = {"TOKENIZERS_PARALLELISM": "true"}
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


def merge_command(plan: StagePlan, step: int, backend: str = "fsdp", module: str = "verl.model_merger") -> list[str]:
    """``python -m verl.model_merger merge`` of the actor at ``global_step_<step>`` into HF weights."""
    return [
        sys.executable,
        "-m",
        module,
        "merge",
        "--backend",
        backend,
        "--local_dir",
        str(plan.checkpoint_dir / f"global_step_{step}" / "actor"),
        "--target_dir",
        str(plan.merged_dir),
    ]


def latest_step(checkpoint_dir: Path) -> int:
    marker = checkpoint_dir / "latest_checkpointed_iteration.txt"
    if not marker.is_file():
        raise VerlEngineError(f"{checkpoint_dir}: no checkpoint was written (no {marker.name})")
    return int(marker.read_text().strip())


def parse_step_metrics(line: str) -> tuple[int, dict[str, float]] | None:
    """verl's console logger line ``step:12 - actor/pg_loss:0.1 - ...`` as (step, metrics)."""
    m = _STEP_LINE.search(line)
    if m is None:
        return None
    metrics = {}
    for part in m.group(2).split(" - "):
        key, _, value = part.partition(":")
        try:
            metrics[key.strip()] = float(value)
        except ValueError:
            continue
    return int(m.group(1)), metrics


class StopAtCheckpoint:
    """When a stop is requested, a verl job ends once it has written a checkpoint after the
    request (every ``trainer.save_freq`` steps), so that a rerun resumes from there: verl has no
    safe point of its own that a signal reaches, and killing it mid-step loses the steps since
    its last checkpoint."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.at_request: int | None = None

    def _latest(self) -> int:
        try:
            return latest_step(self.checkpoint_dir)
        except (VerlEngineError, ValueError, OSError):
            return 0

    def __call__(self) -> bool:
        if self.at_request is None:
            self.at_request = self._latest()
            logger.warning(
                "stopping the verl job after its next checkpoint (after step %d; trainer.save_freq)", self.at_request
            )
            return False
        return self._latest() > self.at_request


def _end(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM the job's process group (the trainer and the local Ray it started), SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stream(
    command: list[str], env: dict[str, str], what: str, on_line=None, stop_when: Callable[[], bool] | None = None
) -> None:
    """Run ``command``, forwarding its output line by line to our log; a non-zero exit raises with
    the last lines of the output. Once a stop is requested (`sent.interrupt`) and ``stop_when()``
    says the job may end (`StopAtCheckpoint`), the job is ended and `Interrupted` raised; a job
    that is never to be cut (``stop_when`` None) runs to its end. However this returns (a second
    signal included), the job does not outlive it."""
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL)
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group, ended as one; signals reach us, not it
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(out=proc.stdout) -> None:
        for raw in out:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name=f"{what} log").start()
    try:
        while True:
            try:
                raw = lines.get(timeout=1.0)  # a silent job still gets its stop checked each second
            except queue.Empty:
                raw = ""
            if raw is None:
                break
            if raw:
                line = redact_text(raw.rstrip("\n"))  # a library may print a URI it was given, credentials and all
                tail.append(line)
                logger.info("[%s] %s", what, line)
                if on_line is not None:
                    on_line(line)
            if stop_when is not None and interrupt.requested() is not None and stop_when():
                _end(proc)
                interrupt.check(f"after {what} wrote a checkpoint (a rerun resumes from it)")
    except BaseException:  # a stop, a second signal, an error in a callback: the job goes too
        _end(proc)
        raise
    rc = proc.wait()  # its output ended: it is exiting by itself
    if rc != 0:
        raise VerlEngineError(f"{what} exited with status {rc}; last lines:\n" + "\n".join(tail))


def run_stage(plan: StagePlan, cfg: SentConfig, *, callback=None, fresh: bool = False) -> dict[str, Any]:
    """Run the stage's verl job, then merge its last checkpoint into ``plan.merged_dir``.
    Returns the stage summary (also written to ``final/stage.json``).

    An interrupted stage resumes from its last verl checkpoint (``resume_mode=auto``). A finished
    stage is trained again only with ``fresh=True``, which moves the old stage directory aside
    first (so verl cannot resume from it)."""
    if not plan.curated:
        raise VerlEngineError(f"stage {plan.stage} has no curriculum yet: {plan.train_files[0]} does not exist")
    if plan.ray_address is not None:
        check_ray_address(plan.ray_address, "training.verl.ray_address")  # `ray job submit` would retry it
    if plan.rows is not None and plan.rows < plan.batch_size:
        # verl's dataloader drops the last partial batch: no step at all (ZeroDivisionError in verl's fit)
        raise VerlEngineError(
            f"stage {plan.stage} has {plan.rows} problems, fewer than training.train_batch_size={plan.batch_size}: "
            "verl drops a partial batch, so no step would run. Lower train_batch_size, curate more problems "
            "(data.limit), or use fewer stages (curriculum.n_stages)."
        )
    clear_finished(plan.out_dir, plan.stage, fresh=fresh, error=VerlEngineError)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.training.verl.val_files and not plan.val_files[0].is_file():
        write_validation_set(cfg, plan.val_files[0])
    metrics_path = plan.out_dir / "metrics.jsonl"
    _drop_torn_tail(metrics_path)
    history: list[dict[str, float]] = []

    def on_line(line: str) -> None:
        parsed = parse_step_metrics(line)
        if parsed is not None:
            step, metrics = parsed
            history.append({"step": float(step), **metrics})
            with metrics_path.open("a") as f:  # kept as it comes: a killed job's steps survive its resume
                f.write(json.dumps(json_safe(history[-1])) + "\n")
            if callback is not None:
                callback(step, metrics)

    t0 = time.perf_counter()
    logger.info("stage %d: verl job\n%s", plan.stage, plan.shell())
    stop = StopAtCheckpoint(plan.checkpoint_dir)
    stream(plan.command, {**plan.env, **plan.secret_env}, f"verl stage {plan.stage}", on_line, stop_when=stop)
    step = latest_step(plan.checkpoint_dir)
    tmp = plan.merged_dir.with_name(".final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a merge interrupted earlier
    merge = merge_command(plan, step, cfg.training.verl.merge_backend, cfg.training.verl.merger_module)
    merge[merge.index("--target_dir") + 1] = str(tmp)
    stream(merge, {}, f"merge stage {plan.stage}")
    summary = {
        "stage": plan.stage,
        "steps": step,
        "start_model": plan.start_model,
        "loss": cfg.training.loss,
        "engine": "verl",
        "checkpoint": str(plan.checkpoint_dir / f"global_step_{step}"),
        "seconds": time.perf_counter() - t0,
        "last_metrics": history[-1] if history else {},
    }
    write_step_history(metrics_path)  # before the summary, which records its digest
    write_summary(tmp, summary)
    tmp.rename(plan.merged_dir)
    return summary


def _drop_torn_tail(path: Path) -> None:
    """A job killed while appending a line leaves it cut: drop it before the resumed job appends."""
    if path.is_file():
        text = path.read_text()
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1])


def write_step_history(path: Path) -> list[dict[str, float]]:
    """``metrics.jsonl`` with one line per step, in step order. A resumed job repeats the steps
    after its last checkpoint; the last run of each step is the one its weights came from."""
    by_step: dict[float, dict[str, float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                by_step[row["step"]] = row
    rows = [by_step[k] for k in sorted(by_step)]
    write_history(path.parent, rows)
    return rows
