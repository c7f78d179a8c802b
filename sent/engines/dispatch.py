"""The one entry point that trains a stage, whichever engine the config names: the command line's
and the pipeline's task. It sits above the engines (`sent.engines.local`, `sent.engines.verl`) and
the stage contract they share (`sent.engines.stage`), so that the contract imports no engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sent.config import SentConfig
from sent.engines.stage import MetricsCallback, StageResult, TrainingError, read_history, start_model_for


def train_stage(
    cfg: SentConfig,
    *,
    stage: int,
    curriculum_dir: str | Path,
    run_dir: str | Path,
    engine: str | None = None,
    start_model: str | Path | None = None,
    max_steps: int | None = None,
    callback: MetricsCallback | None = None,
    fresh: bool = False,
    progress: bool = True,
    mlflow: tuple[str, str] | None = None,
    on_plan: Callable[[Any], None] | None = None,
) -> StageResult:
    """Train curriculum stage ``stage`` into ``<run_dir>/stage-<stage>`` with ``engine`` (default
    ``training.engine``): the one entry point of the command line and the pipeline's task.

    ``start_model`` defaults to `start_model_for`. ``callback(step, metrics)`` gets each step's
    metrics as it ends (verl: parsed from its log). verl only: ``mlflow`` is ``(tracking_uri,
    run_id)`` for verl's own logger, and ``on_plan(plan)`` sees the job's `StagePlan` before it
    starts (to record its command, say)."""
    engine = engine or cfg.training.engine
    if any((Path(run_dir) / name).is_file() for name in ("manifest.json", "curation.json")):
        # its stage-K/ directories are the curriculum's shards: training there (with --fresh, moving
        # stage-K/ aside) would take the curriculum away from under itself
        raise TrainingError(f"{run_dir} is a curation directory, not a run directory; train into another --out")
    start = str(start_model) if start_model is not None else start_model_for(cfg, run_dir, stage)
    if engine == "local":
        from sent.engines.local import LocalEngine

        return LocalEngine(
            cfg,
            stage=stage,
            curriculum_dir=curriculum_dir,
            run_dir=run_dir,
            max_steps=max_steps,
            callback=callback,
            fresh=fresh,
            progress=progress,
            start_model=start,
        ).run()
    from sent.engines.verl import plan_stage
    from sent.engines.verl_run import run_stage

    plan = plan_stage(
        cfg,
        stage=stage,
        curriculum_dir=curriculum_dir,
        run_dir=run_dir,
        start_model=start,
        mlflow=mlflow,
        max_steps=max_steps,
    )
    if on_plan is not None:
        on_plan(plan)
    summary = run_stage(plan, cfg, callback=callback, fresh=fresh)
    return StageResult(
        stage,
        plan.merged_dir,
        summary["steps"],
        read_history(plan.out_dir),
        plan.start_model,
        meta={"engine": "verl", "verl_checkpoint": summary["checkpoint"]},
    )
