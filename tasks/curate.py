"""The offline phase as a pipeline step: `sent.curate.curate` with lineage."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from sent.lineage import code_version, digest_of, path_digest
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.gpu import gpu_slot
from tasks.mlflow_runs import child_run, log_curriculum_stage
from tasks.retries import IO_RETRY_OPTIONS


def _out_dir(ctx: RunContext) -> Path:
    from sent.curate import default_out_dir

    cfg = ctx.load()
    return Path(ctx.root) / default_out_dir(cfg, cfg.data.limit)


def _key(inputs: dict) -> str:
    from sent.curate import curation_digest

    ctx = inputs["ctx"]
    cfg = ctx.load()
    scoring = cfg.semantic.scoring_model or cfg.model
    return digest_of(
        "curate",
        curation_digest(cfg),
        path_digest(cfg.data.train_path),
        path_digest(scoring.path),
        cfg.data.limit,
        _out_dir(ctx),
        code_version(),
    )


@task(name="curate", task_run_name="curate", cache_policy=cache_on(_key), persist_result=True, **IO_RETRY_OPTIONS)
def curate_step(ctx: RunContext, model: Artefact | None = None) -> Artefact:
    """Sample, grade, cluster and stage the training problems (``model``: the bootstrap artefact
    when the toy world made the model, for lineage)."""
    from sent.curate import CONFIG_SECTIONS, curate

    cfg = ctx.load()
    params = {s: getattr(cfg, s).model_dump(mode="json") for s in CONFIG_SECTIONS}
    with child_run(ctx, "curate", {**params, "seed": cfg.seed}) as (tracker, run_id), gpu_slot(cfg, "curate"):
        t0 = time.perf_counter()
        result = curate(cfg, out=_out_dir(ctx))
        compute_s = time.perf_counter() - t0
        m = result.manifest
        out = result.out_dir
        tracker.log_dataset(
            run_id,
            name=Path(cfg.data.train_path).name,
            digest=path_digest(cfg.data.train_path),
            source=str(Path(cfg.data.train_path).resolve()),
            context="curation-input",
            profile=m["counts"],
        )
        summary = m["curriculum"]
        for s in summary["stages"]:
            log_curriculum_stage(tracker, run_id, out, s["stage"], m, "curriculum")
        metrics = {**{f"counts.{k}": v for k, v in m["counts"].items()}, **summary_metrics(summary)}
        metrics.update({f"timing_s.{k}": v for k, v in m.get("timing_s", {}).items()})
        tracker.log_metrics(run_id, metrics)
        for name in ("manifest.json", "se_histogram.png", "se_vs_pass_rate.png", "rejected.parquet"):
            if (out / name).is_file():
                tracker.log_artifact(run_id, out / name)
        create_table_artifact(
            key="curriculum-summary",
            table=[
                {
                    "stage": s["stage"],
                    "problems": s["count"],
                    "SE mean": rounded(s["se_mean"]),
                    "SE min": rounded(s["se_min"]),
                    "SE max": rounded(s["se_max"]),
                }
                for s in summary["stages"]
            ],
            description=(
                f"Curriculum {out.name}: {m['counts']['accepted']} problems accepted, {m['counts']['rejected']} "
                f"rejected; Pearson r(SE, 1 - pass rate) = {rounded(summary['pearson_r_se_vs_1_minus_pass_rate'], 3)}"
            ),
        )
    return Artefact.of(
        "curriculum",
        "curate",
        out,
        mlflow_run_id=run_id,
        meta={"reused": result.reused, "counts": m["counts"], "stages": summary["stages"], **produced(ctx, compute_s)},
    )


def rounded(x: float | None, digits: int = 4) -> float | None:
    """Manifests store NaN (an empty stage's mean, an undefined correlation) as null."""
    return None if x is None or x != x else round(x, digits)


def summary_metrics(summary: dict) -> dict[str, float]:
    out = {"pearson_r_se_vs_1_minus_pass_rate": summary["pearson_r_se_vs_1_minus_pass_rate"]}
    out["mean_pass_rate"] = summary["mean_pass_rate"]
    for s in summary["stages"]:
        out.update({f"stage_{s['stage']}.{k}": v for k, v in s.items() if k != "stage"})
    return out
