"""The reports of a finished pipeline run: the paired comparison of the trained model against its
start (``comparison.md`` / ``comparison.json`` and ``compare.*`` metrics), the evaluations'
summary metrics, and the plots (training curves across stages, evaluation by benchmark)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from sent.data_contract import write_json, write_text
from sent.evaluation import level_groups
from sent.steps import Step
from tasks.context import Artefact, RunContext

COMPARISON = "comparison.md"


def _metric_key(group: str) -> str:
    return "trained" if group.startswith("trained") else re.sub(r"[^0-9A-Za-z_.-]+", "_", group)


def compare_with_start(ctx: RunContext, artefacts: dict[str, Artefact], out: Path) -> dict[str, float]:
    """The trained model against its start, per problem (`sent.stats`): ``comparison.md`` and
    ``comparison.json`` in ``out``, and the differences as metrics (none without both evaluations)."""
    from sent.stats import compare_evaluations, comparison_json, comparison_markdown, problem_scores

    details = {s: Path(artefacts[s].path).parent / "details.parquet" for s in ("eval:base", "eval") if s in artefacts}
    if len(details) < 2 or not all(p.is_file() for p in details.values()):
        return {}
    cfg = ctx.load()
    levels, trained = level_groups(cfg)
    rows = compare_evaluations(
        problem_scores(details["eval:base"]), problem_scores(details["eval"]), levels=levels, trained=trained
    )
    metric = f"avg@{cfg.evaluation.n}"
    write_json(comparison_json(rows), out / "comparison.json")
    write_text(
        f"Trained model against its start, {metric} per problem (paired, Student t):\n\n"
        + comparison_markdown(rows, metric)
        + "\n",
        out / COMPARISON,
    )
    return {
        f"compare.{_metric_key(r.group)}.{k}": getattr(r, k)
        for r in rows
        for k in ("difference", "ci_low", "ci_high")
        if math.isfinite(getattr(r, k))
    }


def eval_summary(evals: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{"eval": {"mean.avg@8": ..}, "eval:base": ..}`` from the evaluations' results."""
    from sent.evaluation import flat_metrics

    return {step: flat_metrics(results, counts=False) for step, results in evals.items()}


def plots(artefacts: dict[str, Artefact], evals: dict[str, dict], out: Path) -> list[Path]:
    """``training_curves.png`` (stages end to end) and ``evaluation_<metric>.png`` in ``out``."""
    from sent.engines.stage import read_history
    from sent.plots import plot_evaluation, plot_training

    paths = []
    histories = {
        Step.parse(step).k: read_history(Path(a.path).parent)
        for step, a in sorted(artefacts.items())
        if step.startswith("train:") and (Path(a.path).parent / "metrics.jsonl").is_file()
    }
    if histories:
        paths.append(plot_training(histories, out / "training_curves.png"))
    by_benchmark = {step: results["benchmarks"] for step, results in evals.items()}
    if by_benchmark:
        first = next(iter(next(iter(by_benchmark.values())).values()))  # one benchmark's metrics
        metric = next((k for k in first if k.startswith("avg@")), None)
        if metric is not None:
            names = {"eval:base": "base model", "eval": "trained"}
            paths.append(
                plot_evaluation(
                    {names.get(k, k): v for k, v in sorted(by_benchmark.items(), reverse=True)},
                    metric,
                    out / f"evaluation_{metric.replace('@', '_at_')}.png",
                )
            )
    return paths
