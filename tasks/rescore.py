"""Re-staging between stages (``curriculum.mode: rescored``) as a pipeline step, ``rescore:K``:
`sent.rescore.rescore` with stage K's weights, its own MLflow child run and lineage."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from sent.lineage import code_version, digest_of
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.curate import rounded
from tasks.gpu import gpu_slot
from tasks.mlflow_runs import child_run, log_curriculum_stage
from tasks.retries import IO_RETRY_OPTIONS


def rescore_dir(ctx: RunContext, stage: int) -> Path:
    return Path(ctx.run_dir) / f"rescore-{stage}"


def _key(inputs: dict) -> str:
    ctx: RunContext = inputs["ctx"]
    cfg = ctx.load()
    return digest_of(
        "rescore",
        inputs["stage"],
        rescore_dir(ctx, inputs["stage"]),
        inputs["curriculum"].digest,
        inputs["model"].digest,
        cfg.section_digest("sampling", "semantic", "curriculum", "prompt", "data"),
        cfg.seed,
        code_version(),
    )


@task(
    name="rescore",
    task_run_name="rescore:{stage}",
    cache_policy=cache_on(_key),
    persist_result=True,
    **IO_RETRY_OPTIONS,
)
def rescore_step(ctx: RunContext, stage: int, curriculum: Artefact, model: Artefact) -> Artefact:
    """Stage the problems after ``stage`` of ``curriculum`` again, by the SE of ``model`` (stage
    ``stage``'s final weights), into ``<run_dir>/rescore-<stage>``."""
    from sent.rescore import rescore

    cfg = ctx.load()
    curriculum.verified()
    model.verified()
    params = {
        "after_stage": stage,
        "curriculum": curriculum.path,
        "model": model.path,
        "sampling": cfg.sampling.model_dump(mode="json"),
        "seed": cfg.seed,
    }
    with child_run(ctx, f"rescore:{stage}", params) as (tracker, run_id), gpu_slot(cfg, "curate"):
        t0 = time.perf_counter()
        result = rescore(cfg, curriculum.path, model.path, stage, rescore_dir(ctx, stage))
        compute_s = time.perf_counter() - t0
        m, out = result.manifest, result.out_dir
        change = m["rescored"]
        for s in m["curriculum"]["stages"][stage:]:
            log_curriculum_stage(tracker, run_id, out, s["stage"], m, "curriculum")
        metrics = {
            "pool": change["pool"],
            "changed_stage": change["changed_stage"],
            "changed_share": change["changed_stage"] / max(1, change["pool"]),
            "filtered_now": change["filtered_now"],
            "timing_s.total": m["timing_s"]["total"],
        }
        for when in ("before", "after"):
            metrics[f"mean_pass_rate_{when}"] = change[f"mean_pass_rate_{when}"]
            for s in change[f"stages_{when}"]:
                metrics[f"stage_{s['stage']}.se_mean_{when}"] = s["se_mean"]
                metrics[f"stage_{s['stage']}.count_{when}"] = s["count"]
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if v is not None and v == v})
        for name in ("manifest.json", "se_histogram.png", "se_vs_pass_rate.png"):
            if (out / name).is_file():
                tracker.log_artifact(run_id, out / name)
        before = {s["stage"]: s for s in change["stages_before"]}
        create_table_artifact(
            key=f"rescore-{stage}",
            table=[
                {
                    "stage": s["stage"],
                    "problems before": before[s["stage"]]["count"],
                    "problems after": s["count"],
                    "SE mean before (base scores)": rounded(before[s["stage"]]["se_mean"]),
                    "SE mean after (stage-model scores)": rounded(s["se_mean"]),
                }
                for s in change["stages_after"]
            ],
            description=(
                f"Re-staged after stage {stage}: {change['changed_stage']} of {change['pool']} problems changed "
                f"stage, {change['filtered_now']} filtered now; mean pass rate "
                f"{rounded(change['mean_pass_rate_before'])} -> {rounded(change['mean_pass_rate_after'])}"
            ),
        )
    return Artefact.of(
        "curriculum",
        f"rescore:{stage}",
        out,
        mlflow_run_id=run_id,
        meta={
            "reused": result.reused,
            "stages": m["curriculum"]["stages"],
            "pool": change["pool"],
            "changed_stage": change["changed_stage"],
            **produced(ctx, compute_s),
        },
    )
