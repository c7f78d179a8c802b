"""Evaluation alone, as its own flow (deployment ``sent-evaluate``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import run_steps


@flow(name="sent-evaluate", log_prints=True)
def sent_evaluate(
    config: str = "configs/toy.yaml",
    overrides: list[str] | None = None,
    reuse: str | None = None,
    run_dir: str | None = None,
    include_base: bool = False,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """Evaluate the last trained stage of a run (and optionally the starting model) on the benchmarks.

    Args:
        config: YAML config (evaluation section: benchmarks, n, k), relative to the project directory.
        overrides: key.path=value config overrides, e.g. ["evaluation.n=32"].
        reuse: the run directory whose last trained stage is evaluated (results go to a new run).
        run_dir: evaluate inside this existing run instead.
        include_base: also evaluate the starting model (model.path) for comparison.
        refresh_cache: re-evaluate even when identical results are cached.
    """
    steps = ["eval:base", "eval"] if include_base else ["eval"]
    return run_steps(config, overrides, steps, run_dir, reuse, refresh_cache)
