"""A pipeline step's MLflow child run, and a curriculum stage logged as its input dataset."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sent.interrupt import Interrupted
from tasks.context import RunContext


def log_curriculum_stage(tracker, run_id: str, curriculum_dir: str | Path, stage: int, manifest: dict, context: str):
    """One curriculum stage as an MLflow input dataset: its shards, their combined digest (from the
    manifest's sha256s, nothing re-read) and the stage's SE summary as profile."""
    from sent.data_contract import stage_files
    from sent.lineage import digest_of

    curriculum_dir = Path(curriculum_dir)
    files = stage_files(curriculum_dir, stage, manifest)
    prefix = f"stage-{stage}/"
    tracker.log_dataset(
        run_id,
        name=f"curriculum-stage-{stage}",
        digest=digest_of(*(e["sha256"] for e in manifest["files"] if e["path"].startswith(prefix))),
        source=str(curriculum_dir / f"stage-{stage}"),
        context=context,
        schema={"format": "parquet", "files": [f.name for f in files]},
        profile=manifest["curriculum"]["stages"][stage - 1],
        tags={"stage": str(stage)},
    )


@contextmanager
def child_run(ctx: RunContext, step: str, params: dict[str, Any] | None = None):
    """A nested MLflow run for one step of the pipeline run ``ctx``; FAILED (with the error as a
    tag) when the step raises. Yields ``(tracker, run_id)``."""
    from prefect.runtime import task_run

    from sent.tracking import Tracker

    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    tags = {"sent.step": step, "sent.run_dir": ctx.run_dir}
    if ctx.flow_run_id:
        tags["sent.prefect_flow_run_id"] = ctx.flow_run_id
    if task_run.id:
        tags["sent.prefect_task_run_id"] = str(task_run.id)
    run_id = tracker.start_run(step, parent_id=ctx.mlflow_run_id, tags=tags, params=params)
    try:
        yield tracker, run_id
    except BaseException as exc:
        tracker.set_tags(run_id, {"sent.error": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker.end_run(run_id, failed=True, killed=isinstance(exc, Interrupted | KeyboardInterrupt))
        raise
    tracker.end_run(run_id)
