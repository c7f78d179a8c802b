"""One curriculum stage of GRPO training as a pipeline step, with its curves in MLflow."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from prefect import task

from sent.lineage import code_version, digest_of
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.gpu import gpu_slot
from tasks.mlflow_runs import child_run, log_curriculum_stage
from tasks.retries import IO_RETRY_OPTIONS

logger = logging.getLogger(__name__)


def _key(inputs: dict) -> str:
    ctx: RunContext = inputs["ctx"]
    cfg = ctx.load()
    return digest_of(
        "train",
        inputs["stage"],
        ctx.run_dir,
        inputs["curriculum"].digest,
        inputs["start"].digest,
        cfg.section_digest("training", "model", "prompt"),
        cfg.seed,
        code_version(),
        # an online epoch order trains otherwise; static and rescored keep the keys they had
        *([json.dumps(cfg.online_order(), sort_keys=True)] if cfg.online_order() else []),
    )


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _finished(final: Path, start: Artefact) -> dict | None:
    """The summary of a stage already finished in this run from the same start, else None."""
    summary = final / "stage.json"
    if not summary.is_file():
        return None
    info = json.loads(summary.read_text())
    return info if str(Path(info.get("start_model", "")).resolve()) == str(Path(start.path).resolve()) else None


@task(
    name="train-stage",
    task_run_name="train:{stage}",
    cache_policy=cache_on(_key),
    persist_result=True,
    **IO_RETRY_OPTIONS,
)
def train_step(ctx: RunContext, stage: int, curriculum: Artefact, start: Artefact, global_step: int = 0) -> Artefact:
    """Train curriculum stage ``stage`` from ``start`` into ``<run_dir>/stage-<stage>``.

    Per-step metrics go to the stage's child run (step = the stage's step) and, prefixed
    ``train/``, to the parent run at ``global_step + step``, so the parent shows all stages end to end."""
    from sent.data_contract import load_manifest
    from sent.engines.dispatch import train_stage
    from sent.engines.stage import FINAL, read_history, stage_dir
    from sent.online_se import HISTORY_FILE

    cfg = ctx.load()
    curriculum.verified()
    start.verified()
    out = stage_dir(Path(ctx.run_dir), stage)
    params = {
        "training": cfg.training.model_dump(mode="json"),
        "stage": stage,
        "start_model": start.path,
        "start_model_digest": start.digest,
        "curriculum": curriculum.path,
        "seed": cfg.seed,
        "curriculum_mode": cfg.curriculum.mode,
        "curriculum_online_filter": cfg.curriculum.online_filter,
    }
    with child_run(ctx, f"train:{stage}", params) as (tracker, run_id), gpu_slot(cfg, "train"):
        # the engine verifies the stage's shards when it reads them (load_curriculum, plan_stage): not here too
        manifest = load_manifest(curriculum.path, verify=False)
        log_curriculum_stage(tracker, run_id, curriculum.path, stage, manifest, "training")
        reported: set[int] = set()

        def to_parent(step: int, metrics: dict[str, float]) -> None:
            tracker.log_metrics(ctx.mlflow_run_id, {f"train/{k}": v for k, v in metrics.items()}, global_step + step)
            reported.add(step)

        def report(step: int, metrics: dict[str, float]) -> None:
            tracker.log_metrics(run_id, metrics, step)
            to_parent(step, metrics)
            logger.info(
                "train:%d step %d: reward %.3f, accuracy %.3f, policy entropy %.4f",
                stage,
                step,
                metrics.get("reward_mean", float("nan")),
                metrics.get("accuracy", float("nan")),
                metrics.get("policy_entropy", float("nan")),
            )

        done = _finished(out / FINAL, start)
        engine_meta: dict = {}
        if done is not None:
            logger.info("stage %d already finished in %s; reusing it", stage, out / FINAL)
            history = read_history(out)
            steps, final_dir = done["steps"], out / FINAL
            compute_s = 0.0
        else:
            verl = cfg.training.engine == "verl"

            def record_plan(plan) -> None:
                tracker.set_tags(run_id, {"sent.engine": "verl", "sent.verl_experiment": plan.experiment_name})
                tracker.log_artifact(run_id, _write_text(out / "verl" / "command.sh", plan.shell() + "\n"))

            t0 = time.perf_counter()
            result = train_stage(
                cfg,
                stage=stage,
                curriculum_dir=curriculum.path,
                run_dir=ctx.run_dir,
                start_model=start.path,
                # verl's own MLflow logger writes the stage's curves into the child run: only the parent is ours
                callback=to_parent if verl else report,
                progress=sys.stderr.isatty(),
                mlflow=(ctx.tracking_uri, run_id),
                on_plan=record_plan,
            )
            compute_s = time.perf_counter() - t0
            history, steps, final_dir = result.history, result.steps, result.final_dir
            # lineage: which verl checkpoint the next stage's weights were merged from
            engine_meta = result.meta
            if verl:
                reported.update(range(1, len(history) + 1))  # verl logged them into the child run itself
                for i, metrics in enumerate(history, start=1):  # ... but for the online SE, which is ours
                    online = {k: v for k, v in metrics.items() if k.startswith("online_se_")}
                    if online:
                        tracker.log_metrics(run_id, online, i)
                        to_parent(i, online)
        for i, metrics in enumerate(history, start=1):  # steps restored from a checkpoint were not reported
            if i not in reported:
                report(i, metrics)
        tracker.log_artifact(run_id, out / "metrics.jsonl")
        if (out / HISTORY_FILE).is_file():  # curriculum.mode online: each problem's SE at each step
            tracker.log_artifact(run_id, out / HISTORY_FILE)
        tracker.log_artifact(run_id, final_dir / "stage.json")
        if cfg.tracking.log_checkpoints:
            tracker.log_artifact(run_id, final_dir, "final")
    last = history[-1] if history else {}
    return Artefact.of(
        "model",
        f"train:{stage}",
        final_dir,
        mlflow_run_id=run_id,
        meta={
            "steps": steps,
            "global_step_end": global_step + steps,
            "start_model": start.path,
            "accuracy_last": last.get("accuracy"),
            "policy_entropy_last": last.get("policy_entropy"),
            **engine_meta,
            **produced(ctx, compute_s),
        },
    )
