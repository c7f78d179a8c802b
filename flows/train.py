"""One training stage alone, as its own flow (deployment ``sent-train-stage``): rerun stage K
of a run from the Prefect UI without recomputing anything upstream."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import run_steps


@flow(name="sent-train-stage", log_prints=True)
def sent_train_stage(
    stage: int,
    config: str = "configs/toy.yaml",
    overrides: list[str] | None = None,
    reuse: str | None = None,
    run_dir: str | None = None,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """Train curriculum stage K with GRPO and the configured policy loss.

    Args:
        stage: the curriculum stage K; K > 1 starts from stage K-1's final weights.
        config: YAML config, relative to the project directory.
        overrides: key.path=value config overrides, e.g. ["training.lr=2e-6"].
        reuse: a previous run directory providing the curriculum (and stage K-1's weights);
            the new stage is written to a new run directory.
        run_dir: train inside this existing run instead (its curriculum and stage K-1 are used),
            e.g. to rerun a failed stage.
        refresh_cache: retrain even when an identical stage is cached.
    """
    return run_steps(config, overrides, [f"train:{stage}"], run_dir, reuse, refresh_cache)
