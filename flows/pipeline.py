"""The whole SENT pipeline as one Prefect flow: bootstrap (toy) -> curate -> train stage 1 ... K
(with ``curriculum.mode: rescored``, rescore:k between stages k and k + 1) -> evaluate, each step a
task from `tasks/`, every run tracked in MLflow (see `tasks/run.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from sent.interrupt import Interrupted, check, handle_signals
from sent.locks import exclusive
from sent.steps import Step, curriculum_step, last_trained
from tasks.context import Artefact, RunContext, show_library_logs
from tasks.curate import curate_step
from tasks.evaluate import evaluate_step
from tasks.record import default_run_dir
from tasks.rescore import rescore_step
from tasks.run import close_run, open_run, record_step
from tasks.stop_logging import quiet_expected_stops, raise_if_cancelled
from tasks.toy import base_model, bootstrap_toy
from tasks.train import train_step


def run_planned_steps(ctx: RunContext, *, refresh_cache: bool = False) -> dict[str, Artefact]:
    """Run ``ctx.steps`` in order, each fed the artefacts of the steps before it (or of the reused run)."""

    def fresh(step_task):
        return step_task.with_options(refresh_cache=True) if refresh_cache else step_task

    artefacts: dict[str, Artefact] = dict(ctx.reused)
    cfg = ctx.load()
    for step in ctx.steps:
        check(f"before step {step} (rerun the rest with --run-dir {ctx.run_dir})")
        if step == "bootstrap":
            made = fresh(bootstrap_toy)(ctx)
        elif step == "curate":
            made = fresh(curate_step)(ctx, artefacts.get("bootstrap"))
        elif step.startswith("train:"):
            k = Step.parse(step).k
            if k == 1:
                start, offset = base_model(ctx), 0
            else:
                start = artefacts[str(Step.train(k - 1))]
                offset = start.meta.get("global_step_end", 0)
            made = fresh(train_step)(ctx, k, artefacts[curriculum_step(cfg, k)], start, offset)
        elif step.startswith("rescore:"):
            k = Step.parse(step).k
            made = fresh(rescore_step)(ctx, k, artefacts[curriculum_step(cfg, k)], artefacts[str(Step.train(k))])
        elif step == "eval:base":
            made = fresh(evaluate_step)(ctx, base_model(ctx), "eval:base")
        else:  # eval: the last trained stage
            made = fresh(evaluate_step)(ctx, artefacts[last_trained(artefacts)], "eval")
        record_step(ctx, made)
        artefacts[step] = made
    return artefacts


def run_steps(
    config: str,
    overrides: list[str] | None,
    steps: list[str] | None,
    run_dir: str | None,
    reuse: str | None,
    refresh_cache: bool,
) -> dict[str, Any]:
    """Open the run, compose the steps, close the run (failed, with the step's error, if one raises).
    The run directory is locked first: a second pipeline on it is refused before it writes anything."""
    quiet_expected_stops()
    show_library_logs()
    out = Path(run_dir).resolve() if run_dir else default_run_dir(Path.cwd())
    # SIGTERM/SIGINT: stop at the next safe point, then close the run below
    with handle_signals(), exclusive(out, "pipeline run"):
        ctx = open_run(config, overrides, steps, str(out), reuse)
        try:
            run_planned_steps(ctx, refresh_cache=refresh_cache)
        except BaseException as exc:
            stopped = isinstance(exc, Interrupted | KeyboardInterrupt)
            close_run(ctx, error=f"{type(exc).__name__}: {exc}", interrupted=stopped)
            raise_if_cancelled(exc)  # a cancel from Prefect's UI ends Cancelled
            raise
        return close_run(ctx)


@flow(name="sent-pipeline", log_prints=True)
def sent_pipeline(
    config: str = "configs/toy.yaml",
    overrides: list[str] | None = None,
    steps: list[str] | None = None,
    reuse: str | None = None,
    run_dir: str | None = None,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """SENT end to end: curate a semantic-entropy curriculum, train it stage by stage, evaluate.

    Args:
        config: YAML config, relative to the project directory (configs/toy.yaml, configs/paper/...).
        overrides: key.path=value config overrides, e.g. ["training.lr=2e-6", "sampling.n=16"].
        steps: what to run, in order; default everything: bootstrap (toy configs), curate,
            train:1 ... train:K (with curriculum.mode=rescored, rescore:k after train:k), eval:base,
            eval. E.g. ["train:2", "eval"] with reuse.
        reuse: a previous run directory (data/runs/pipeline-...) whose curriculum and stage weights
            feed the steps not run here; nothing upstream is recomputed.
        run_dir: write into this run directory (default data/runs/pipeline-<date>-<flow run id>);
            an existing one is continued, e.g. to rerun a failed stage.
        refresh_cache: recompute cached steps even when their inputs are unchanged.
    """
    return run_steps(config, overrides, steps, run_dir, reuse, refresh_cache)
