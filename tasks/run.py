"""The Prefect tasks that open, record and close a pipeline run.

A pipeline run owns a directory (``data/runs/pipeline-<date>-<flow run id>`` unless given) with
``run.json``, its lineage record (`tasks.record`). A later run can reuse its artefacts
(``reuse``), or continue in the same directory (``run_dir``), e.g. to rerun one failed stage.
Closing a run writes its reports (`tasks.reports`).

Steps, in order: ``bootstrap`` (toy configs only), ``curate``, ``train:1`` ... ``train:K``,
``eval:base`` (the starting model) and ``eval`` (the last trained stage).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact

from sent.config_loading import load_config
from sent.data_contract import json_safe
from sent.lineage import code_version
from sent.redaction import redact_text, redact_uri
from sent.steps import StepError, depends_on, plan_steps, reused_inputs
from sent.tracking import Tracker, lineage_tags, resolve_tracking_uri
from tasks.context import Artefact, RunContext
from tasks.record import RECORD, default_run_dir, read_record, recorded_artefacts, write_record
from tasks.reports import COMPARISON, compare_with_start, eval_summary, plots

logger = logging.getLogger(__name__)


@task(name="open-run", task_run_name="open-run")
def open_run(
    config: str,
    overrides: list[str] | None = None,
    steps: list[str] | None = None,
    run_dir: str | None = None,
    reuse: str | None = None,
) -> RunContext:
    """Validate the config and the step plan, create (or continue) the run directory and its
    MLflow parent run, and link the two."""
    from prefect.runtime import flow_run

    root = Path.cwd()
    overrides = list(overrides or [])
    config_path = Path(config).resolve()
    cfg = load_config(config_path, overrides)
    reused: dict[str, Artefact] = {}
    if reuse:
        reused.update(recorded_artefacts(reuse))
    out = Path(run_dir).resolve() if run_dir else default_run_dir(root)
    previous = read_record(out) if (out / RECORD).is_file() else None
    if previous is not None:
        reused.update(recorded_artefacts(out))  # continuing a run: its own artefacts come first
    planned = plan_steps(cfg, steps, reused)
    # what the planned steps recompute outdates everything derived from it
    reused = {k: v for k, v in reused.items() if not any(depends_on(k, p) for p in planned)}
    for step in reused_inputs(cfg, planned, reused):  # fail now, not after hours of upstream work
        reused[step].verified()

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, root)
    tracker = Tracker(uri, cfg.tracking.experiment, root / cfg.tracking.artifact_root)
    flow_id = str(flow_run.id) if flow_run.id else None
    if previous is not None and flow_id and previous.get("prefect_flow_run_id") == flow_id:
        parent = previous["mlflow"]["run_id"]  # a retry of the same flow run keeps its MLflow run
        tracker.client.update_run(parent, status="RUNNING")
    else:
        tags = lineage_tags(
            root,
            prefect_flow_run_id=flow_id,
            seed=cfg.seed,
            config=config_path,
            run_dir=out,
            steps=",".join(planned),
            reuse=Path(reuse).resolve() if reuse else None,
            continues=previous["mlflow"]["run_id"] if previous else None,
            code_version=code_version(),
        )
        parent = tracker.start_run(out.name, tags=tags, params=cfg.public_dump())
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        config=str(config_path),
        overrides=overrides,
        root=str(root),
        run_dir=str(out),
        steps=planned,
        tracking_uri=uri,
        experiment=cfg.tracking.experiment,
        mlflow_run_id=parent,
        reuse=str(Path(reuse).resolve()) if reuse else None,
        reused=reused,
        flow_run_id=flow_id,
    )
    record = {
        "run_dir": ctx.run_dir,
        "config": ctx.config,
        "overrides": overrides,
        "resolved_config": cfg.public_dump(),
        "steps": planned,
        "reuse": ctx.reuse,
        "code_version": code_version(),
        "mlflow": {"tracking_uri": redact_uri(uri), "experiment_id": tracker.experiment_id, "run_id": parent},
        "prefect_flow_run_id": flow_id,
        "status": "running",
        "error": None,
        "artefacts": {k: v.model_dump() for k, v in reused.items()},
    }
    if previous is None:
        record["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_record(ctx, **record)
    link = tracker.ui_link(parent, cfg.tracking.ui_url)
    create_link_artifact(
        key="mlflow-run", link=redact_uri(link), description=f"MLflow parent run of {out.name} ({redact_uri(uri)})"
    )
    logger.info("pipeline run %s: steps %s; MLflow run %s (%s)", out, planned, parent, redact_uri(uri))
    return ctx


@task(name="record-step", task_run_name="record-step")
def record_step(ctx: RunContext, artefact: Artefact) -> None:
    """Add a step's artefact to ``run.json`` (cached steps too: their result comes from the cache)."""
    record = read_record(ctx.run_dir)
    artefacts = record.get("artefacts", {})
    artefacts[artefact.step] = artefact.model_dump()
    write_record(ctx, artefacts=artefacts)


@task(name="close-run", task_run_name="close-run")
def close_run(ctx: RunContext, error: str | None = None, interrupted: bool = False) -> dict[str, Any]:
    """Plots and summaries of the whole run into the run directory and the MLflow parent run;
    the run's status in both: finished, failed (``error``), or interrupted by a signal (MLflow KILLED).

    A run is closed whatever happens: when closing itself fails (the tracking server died, a
    reused stage's files are damaged), ``run.json`` still says failed, with both errors. The
    close's error is raised only where the run had none (else the run's own error stays the one
    the caller raises)."""
    try:
        return _close(ctx, error, interrupted)
    except Exception as exc:
        why = f"closing the run failed: {type(exc).__name__}: {redact_text(str(exc))}"
        logger.error(why)
        record = write_record(
            ctx, status="interrupted" if interrupted else "failed", error=f"{error}; {why}" if error else why
        )
        with contextlib.suppress(Exception):  # the tracking store may be the thing that failed
            Tracker(ctx.tracking_uri, ctx.experiment).end_run(ctx.mlflow_run_id, failed=True, killed=interrupted)
        if error is None:
            raise StepError(why) from None
        return json_safe(record)


def _close(ctx: RunContext, error: str | None, interrupted: bool) -> dict[str, Any]:
    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    record = read_record(ctx.run_dir)
    artefacts = {k: Artefact.model_validate(v) for k, v in record.get("artefacts", {}).items()}
    out = Path(ctx.run_dir)
    evals = {
        step: json.loads(Path(a.path).read_text())
        for step, a in artefacts.items()
        if a.kind == "evaluation" and Path(a.path).is_file()
    }
    for path in plots(artefacts, evals, out):
        tracker.log_artifact(ctx.mlflow_run_id, path, "reports")
    comparison = compare_with_start(ctx, artefacts, out)
    if comparison:
        tracker.log_artifact(ctx.mlflow_run_id, out / COMPARISON, "reports")
        tracker.log_metrics(ctx.mlflow_run_id, comparison)
    for name, metrics in eval_summary(evals).items():
        tracker.log_metrics(ctx.mlflow_run_id, {f"{name}.{k}": v for k, v in metrics.items()})
    mine = [a for a in artefacts.values() if ctx.flow_run_id and a.meta.get("flow_run_id") == ctx.flow_run_id]
    wall = time.time() - ctx.started
    compute = sum(a.meta.get("compute_s", 0.0) for a in mine)
    timing = {
        "wall_s": round(wall, 1),
        "compute_s": round(compute, 1),
        "orchestration_and_tracking_s": round(wall - compute, 1),
        "by_step_s": {a.step: a.meta.get("compute_s") for a in mine},
    }
    tracker.log_metrics(ctx.mlflow_run_id, {f"timing.{k}": v for k, v in timing.items() if k != "by_step_s"})
    status = "interrupted" if interrupted else "failed" if error else "finished"
    record = write_record(ctx, status=status, error=error, timing=timing)
    tracker.log_artifact(ctx.mlflow_run_id, out / RECORD)
    tracker.end_run(ctx.mlflow_run_id, failed=error is not None, killed=interrupted)
    return json_safe(record)
