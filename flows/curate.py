"""The offline phase alone, as its own flow (deployment ``sent-curate``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import run_steps


@flow(name="sent-curate", log_prints=True)
def sent_curate(
    config: str = "configs/toy.yaml",
    overrides: list[str] | None = None,
    run_dir: str | None = None,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """Sample, grade and cluster the training problems; write the semantic-entropy curriculum.

    Args:
        config: YAML config, relative to the project directory.
        overrides: key.path=value config overrides, e.g. ["sampling.n=16"].
        run_dir: the run directory to record it in (default a new one).
        refresh_cache: recompute even when an identical curation exists.
    """
    return run_steps(config, overrides, ["curate"], run_dir, None, refresh_cache)
