"""The finished arm x seed runs of an ablation directory, read from disk, and the report built
from all of them.

The flow's report covers the arms and seeds of the call that made it. An ablation grown over
several calls (an arm added later, a seed added for some arms) keeps every run in
``<out>/runs/<arm>/seed-<s>/``; `report_from_disk` (``sent ablate --report-only``) reports them
all with the flow's own functions, without Prefect or MLflow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sent.ablation import AblationError
from sent.ablation_report import RunOutcome, summarise, write_report
from sent.config import BUILTIN_ARMS, SentConfig
from sent.engines.stage import read_history
from sent.evaluation import level_groups
from sent.stats import problem_counts, problem_scores, problem_spread

RESULTS = Path("eval-final") / "results.json"


def evaluation_outcome(arm: str, seed: int, results_path: Path, stage_dirs: list[Path]) -> RunOutcome:
    """An evaluation's means, per-problem scores, counts and answer spread, with the training
    histories of ``stage_dirs`` (in stage order)."""
    details = results_path.parent / "details.parquet"
    return RunOutcome(
        arm=arm,
        seed=seed,
        results=json.loads(results_path.read_text(encoding="utf-8"))["mean"],
        scores=problem_scores(details),
        histories=[read_history(d) for d in stage_dirs],
        counts=problem_counts(details),
        spread=problem_spread(details),
    )


def _stage_number(path: Path) -> int:
    return int(path.name.removeprefix("stage-"))


def outcomes_on_disk(out_dir: Path) -> list[RunOutcome]:
    """Every arm x seed under ``out_dir/runs`` whose final evaluation is written, by arm and seed."""
    outcomes = []
    for run in sorted((out_dir / "runs").glob("*/seed-*")):
        match = re.fullmatch(r"seed-(\d+)", run.name)
        if match is None or not (run / RESULTS).is_file():
            continue
        stages = sorted(
            (d for d in run.glob("stage-*") if re.fullmatch(r"stage-\d+", d.name) and (d / "final").is_dir()),
            key=_stage_number,
        )
        outcomes.append(evaluation_outcome(run.parent.name, int(match.group(1)), run / RESULTS, stages))
    return outcomes


def _arm_order(cfg: SentConfig, found: list[str]) -> list[str]:
    """The built-in arms in their order (`BUILTIN_ARMS`), then the config's, then any other by name."""
    known = [*BUILTIN_ARMS, *cfg.ablation.arms]
    return [a for a in dict.fromkeys(known) if a in found] + sorted(set(found) - set(known))


def summarise_ablation(
    cfg: SentConfig, out_dir: Path, outcomes: list[RunOutcome], *, reference: str, arms: list[str]
) -> dict[str, Any]:
    """`summarise` of an ablation's outcomes, with what its config and directory add: the toy
    levels trained (paired differences on them too) and the starting model's evaluation, for scale."""
    levels, trained_groups = level_groups(cfg)
    trained_keys = {
        (bench, pid)
        for bench, ids in levels.items()
        for pid, level in ids.items()
        if f"{bench} {level}" in trained_groups
    }
    base = out_dir / "eval-base" / "results.json"
    summary = summarise(
        outcomes,
        reference=reference,
        n=cfg.evaluation.n,
        trained_keys=trained_keys or None,
        arms=arms,
        start=evaluation_outcome("start", cfg.seed, base, []) if base.is_file() else None,
    )
    summary["trained_groups"] = sorted(trained_groups)
    return summary


def report_from_disk(cfg: SentConfig, out_dir: Path, reference: str) -> dict[str, Any]:
    """``ablation.md``, ``ablation.json`` and the plots of every finished run in ``out_dir``,
    compared with ``reference``; the summary. ``cfg`` is the ablation's config (its evaluation's
    n and benchmarks, and the toy levels trained)."""
    outcomes = outcomes_on_disk(out_dir)
    if not outcomes:
        raise AblationError(f"{out_dir} holds no finished arm x seed run (runs/<arm>/seed-<s>/{RESULTS})")
    arms = _arm_order(cfg, [o.arm for o in outcomes])
    if reference not in arms:
        raise AblationError(f"the reference arm {reference!r} has no finished run in {out_dir}; arms: {arms}")
    summary = summarise_ablation(cfg, out_dir, outcomes, reference=reference, arms=arms)
    summary["runs"] = {f"{o.arm}/seed-{o.seed}": str(out_dir / "runs" / o.arm / f"seed-{o.seed}") for o in outcomes}
    summary["missing"] = []
    write_report(summary, outcomes, out_dir)
    return summary
