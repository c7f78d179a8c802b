"""Evaluation of a model on the configured benchmarks as a pipeline step."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from sent.lineage import code_version, digest_of, path_digest
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.gpu import gpu_slot
from tasks.mlflow_runs import child_run
from tasks.retries import IO_RETRY_OPTIONS


def _out_dir(ctx: RunContext, name: str) -> Path:
    return Path(ctx.run_dir) / ("eval-base" if name == "eval:base" else "eval-final")


def benchmark_files(cfg) -> list[Path]:
    from sent.evaluation import benchmark_path

    ev = cfg.evaluation
    toy_dir = cfg.toy.data_dir if cfg.toy is not None else None
    return [benchmark_path(b, ev.data_dir, toy_dir) for b in ev.benchmarks]


def _key(inputs: dict) -> str:
    ctx: RunContext = inputs["ctx"]
    cfg = ctx.load()
    return digest_of(
        "eval",
        inputs["name"],
        _out_dir(ctx, inputs["name"]),
        inputs["model"].digest,
        cfg.section_digest("evaluation", "prompt", "model", "sampling"),  # the sampler is built from sampling
        cfg.seed,
        *(path_digest(p) for p in benchmark_files(cfg)),
        code_version(),
    )


@task(name="evaluate", task_run_name="{name}", cache_policy=cache_on(_key), persist_result=True, **IO_RETRY_OPTIONS)
def evaluate_step(ctx: RunContext, model: Artefact, name: str = "eval") -> Artefact:
    """pass@k, avg@n and maj@n of ``model`` on every configured benchmark (``name``: ``eval`` for the
    trained model, ``eval:base`` for the starting one)."""
    from sent.evaluation import evaluate_model, flat_metrics, markdown_table

    cfg = ctx.load()
    model.verified()
    out = _out_dir(ctx, name)
    params = {"evaluation": cfg.evaluation.model_dump(mode="json"), "model": model.path, "model_digest": model.digest}
    with child_run(ctx, name, params) as (tracker, run_id), gpu_slot(cfg, "eval"):
        for path in benchmark_files(cfg):
            tracker.log_dataset(
                run_id, name=path.stem, digest=path_digest(path), source=str(path.resolve()), context="evaluation"
            )
        t0 = time.perf_counter()
        results = evaluate_model(cfg, model_path=model.path, out_dir=out)
        compute_s = time.perf_counter() - t0
        tracker.log_metrics(run_id, flat_metrics(results))
        for f in ("results.json", "results.md", "details.parquet"):
            tracker.log_artifact(run_id, out / f)
        create_table_artifact(
            key="evaluation-base" if name == "eval:base" else "evaluation",
            table=[
                {"benchmark": b, **{k: round(100 * v, 2) if k not in ("problems", "n") else v for k, v in m.items()}}
                for b, m in results["benchmarks"].items()
            ],
            description=f"{name}: {model.path} (percent)\n\n" + markdown_table(results["benchmarks"], results["mean"]),
        )
    return Artefact.of(
        "evaluation",
        name,
        out / "results.json",
        mlflow_run_id=run_id,
        meta={"model": model.path, **results["mean"], **produced(ctx, compute_s)},
    )
