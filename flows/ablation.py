"""The paper's ablation as one Prefect flow: arms x seeds on one shared curation (`sent.ablation`).

bootstrap (toy) -> curate -> eval:base, once; then for every arm x seed: its curriculum (the
shared scores, restaged when the arm changes the curriculum), train:1 ... train:K, eval; then the
report. The steps are the pipeline's own tasks, so they are cached the same way: a finished arm x
seed is not run again, an interrupted one resumes, and adding a seed runs only the new runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from sent.ablation import AblationPlan, ArmRun, plan_ablation
from sent.interrupt import Interrupted, check, handle_signals
from sent.locks import exclusive
from tasks.ablation import ablation_report, close_arm_run, end_arm_run, open_ablation, open_arm_run, restage_step
from tasks.context import Artefact, RunContext, show_library_logs
from tasks.curate import curate_step
from tasks.evaluate import evaluate_step
from tasks.rescore import rescore_step
from tasks.stop_logging import quiet_expected_stops, raise_if_cancelled
from tasks.toy import base_model, bootstrap_toy
from tasks.train import train_step


def run_arm(base: RunContext, run: ArmRun, curation: Artefact) -> dict[str, Any]:
    """One arm x seed: its curriculum, every stage from the one before (re-staged between stages
    with ``curriculum.mode: rescored``), the evaluation."""
    show_library_logs()  # also in a worker process of its own
    ctx = open_arm_run(base, run)
    try:
        cfg = ctx.load()
        curriculum = restage_step(ctx, curation, base.run_dir)
        trained: list[Artefact] = []
        start, offset = base_model(ctx), 0
        for stage in range(1, cfg.curriculum.n_stages + 1):
            check(f"before {run.name} stage {stage} (rerun the ablation to resume)")
            if stage > 1 and cfg.curriculum.mode == "rescored":  # the stages left, staged by this model's SE
                curriculum = rescore_step(ctx, stage - 1, curriculum, start)
            made = train_step(ctx, stage, curriculum, start, offset)
            trained.append(made)
            start, offset = made, made.meta.get("global_step_end", 0)
        evaluation = evaluate_step(ctx, start, "eval")
    except BaseException as exc:
        end_arm_run(ctx, exc)
        raise
    return close_arm_run(ctx, run, trained, evaluation)


arm_run_task = task(name="arm-run", task_run_name="{run.arm}/seed-{run.seed}")(run_arm)
"""`run_arm` as one task, for ``parallel`` > 1: a process of its own runs the arm x seed's tasks."""


def run_ablation(plan: AblationPlan, out: str, parallel: int = 1) -> dict[str, Any]:
    """The shared steps, then the arm x seed runs (``parallel`` at a time, each in a process of
    its own when more than one), then the report, also for the runs that finished before a failure."""
    root = str(Path.cwd())
    quiet_expected_stops()
    show_library_logs()
    with handle_signals(), exclusive(Path(out), "ablation"):  # a second ablation on it is refused at once
        base = open_ablation(plan, out, root)
        finished: list[dict[str, Any]] = []
        try:
            made = bootstrap_toy(base) if "bootstrap" in base.steps else None
            curation = curate_step(base, made)
            evaluate_step(base, base_model(base), "eval:base")
            if parallel > 1:
                from prefect.task_runners import ProcessPoolTaskRunner

                with ProcessPoolTaskRunner(max_workers=parallel) as runner:
                    futures = [
                        runner.submit(arm_run_task, {"base": base, "run": r, "curation": curation}) for r in plan.runs
                    ]
                    failures = []
                    for future in futures:  # every finished run reaches the report, also past a failed one
                        try:
                            finished.append(future.result())
                        except Exception as exc:
                            failures.append(exc)
                    if failures:
                        raise failures[0]
            else:
                for run in plan.runs:
                    finished.append(run_arm(base, run, curation))
        except BaseException as exc:
            stopped = isinstance(exc, Interrupted | KeyboardInterrupt)
            ablation_report(
                base, plan, finished, error=f"{type(exc).__name__}: {exc}" if not stopped else "interrupted"
            )
            raise_if_cancelled(exc)  # a cancel from Prefect's UI ends Cancelled
            raise
        return ablation_report(base, plan, finished)


@flow(name="sent-ablation", log_prints=True)
def sent_ablation(
    config: str = "configs/toy.yaml",
    arms: list[str] | None = None,
    seeds: list[int] | None = None,
    out: str | None = None,
    overrides: list[str] | None = None,
    reference: str | None = None,
    parallel: int = 1,
) -> dict[str, Any]:
    """The paper's ablation: each arm (a named set of overrides) x seed trains every stage and is
    evaluated on the same problems with the same sampling seeds; arms compare per problem in pairs.

    Args:
        config: YAML config, relative to the project directory.
        arms: arm names (built in: grpo, kl_cov, clip_cov, entropy_mask, sent, sent_random_stages,
            sent_one_stage, grpo_curriculum, grpo_positive, sent_rescored, sent_online; more in the config's
            ablation.arms); default ablation.default_arms.
        seeds: training seeds of every arm; default ablation.seeds.
        out: the ablation's directory (default data/runs/ablation-<config name>); rerunning into
            the same one resumes it and reuses every finished arm x seed.
        overrides: key.path=value overrides for every arm (e.g. ["data.limit=3000"]).
        reference: the arm the others are compared with (default ablation.reference, grpo).
        parallel: arm x seed runs at a time, each in its own process (for machines with more cores).
    """
    plan = plan_ablation(config, arms=arms, seeds=seeds, overrides=overrides or [], reference=reference)
    out = out or str(Path("data") / "runs" / f"ablation-{Path(config).stem}")
    return run_ablation(plan, out, parallel)
