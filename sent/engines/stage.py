"""What every training engine shares about a stage: where it lives, how many steps it takes,
whether it is finished, and how its history and summary are written.

A stage of a run lives in ``<run_dir>/stage-K/``: ``metrics.jsonl`` (one line per step, in step
order), engine-specific state (checkpoints, verl's job), and ``final/`` with the stage's weights
and ``stage.json`` (its summary). ``final/stage.json`` is written last, inside a temporary
directory that is then renamed, so its presence means the stage finished. Stage 1 starts from
``model.path`` and stage K+1 from stage K's ``final/``. No torch here: the verl engine's driver
and the command line use this module too.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sent.config import SentConfig
from sent.data_contract import json_safe, sha256_file
from sent.errors import SentError

logger = logging.getLogger(__name__)
FINAL = "final"
SUMMARY = "stage.json"
HISTORY = "metrics.jsonl"


MetricsCallback = Callable[[int, dict[str, float]], None]


class TrainingError(SentError, RuntimeError):
    """A stage that cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class StageResult:
    """A trained stage: its final weights, step count and per-step metrics; ``meta`` holds what
    is the engine's own (verl: ``{"engine": "verl", "verl_checkpoint": ...}``)."""

    stage: int
    final_dir: Path
    steps: int
    history: list[dict[str, float]]
    start_model: str
    meta: dict[str, Any] = field(default_factory=dict)


def stage_dir(run_dir: str | Path, stage: int) -> Path:
    return Path(run_dir) / f"stage-{stage}"


def is_finished(stage_out: str | Path) -> bool:
    """Whether the stage in ``stage_out`` finished (its ``final/stage.json`` exists)."""
    return (Path(stage_out) / FINAL / SUMMARY).is_file()


def start_model_for(cfg: SentConfig, run_dir: str | Path, stage: int, *, must_exist: bool = True) -> str:
    """Stage 1 starts from the configured model, stage K+1 from stage K's final weights (which
    must exist, unless ``must_exist`` is False: a plan shown before they do)."""
    if stage == 1:
        return cfg.model.path
    previous = stage_dir(run_dir, stage - 1) / FINAL
    if must_exist and not (previous / SUMMARY).is_file():
        raise TrainingError(
            f"stage {stage} starts from stage {stage - 1}'s final weights, but {previous} does not exist; "
            f"train stage {stage - 1} first"
        )
    return str(previous)


def stage_steps(cfg: SentConfig, n_rows: int) -> int:
    """Optimiser steps of a stage of ``n_rows`` problems: ``floor(epochs_per_stage * n_rows /
    train_batch_size)``, at least one (``epochs_per_stage`` may be fractional)."""
    training = cfg.training
    return max(1, math.floor(training.epochs_per_stage * n_rows / training.train_batch_size))


def clear_finished(stage_out: str | Path, stage: int, *, fresh: bool, error: type[Exception] = TrainingError) -> None:
    """Refuse to retrain a finished stage unless ``fresh``; with ``fresh``, move the old stage
    directory aside (``stage-K.old-<time>``) so that nothing resumes from it."""
    out = Path(stage_out)
    if not is_finished(out):
        return
    if not fresh:
        raise error(
            f"stage {stage} already finished at {out / FINAL}; retrain it explicitly with fresh=True (--fresh), "
            "which keeps the old run beside it"
        )
    backup = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    out.rename(backup)
    logger.warning("stage %d: previous run moved to %s", stage, backup)


def read_history(stage_out: str | Path) -> list[dict[str, float]]:
    """The per-step metrics of a stage (``stage-K/metrics.jsonl``, as every engine writes it). A
    finished stage's summary holds the file's digest: a file changed since (truncated, edited)
    is refused, naming it, rather than reported as the stage's curves."""
    path = Path(stage_out) / HISTORY
    if not path.is_file():
        raise TrainingError(f"{path} is missing: the stage's metrics are gone; retrain the stage")
    summary = Path(stage_out) / FINAL / SUMMARY
    if summary.is_file():
        try:
            expected = json.loads(summary.read_text(encoding="utf-8")).get("history_sha256")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise TrainingError(f"{summary} is not a readable stage summary; retrain the stage") from None
        if expected is not None and sha256_file(path) != expected:
            raise TrainingError(
                f"{path} is not the file the finished stage wrote (its sha256 differs from {summary}); "
                "retrain the stage"
            )
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{path} is not JSON lines ({exc}); retrain the stage") from None


def write_history(stage_out: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``metrics.jsonl`` with ``rows``, one line each, replaced atomically (NaN is written as null)."""
    path = Path(stage_out) / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{HISTORY}.tmp")
    tmp.write_text("".join(json.dumps(json_safe(r)) + "\n" for r in rows))
    tmp.replace(path)
    return path


def write_summary(final_tmp: str | Path, summary: dict[str, Any]) -> Path:
    """``stage.json`` in the stage's final directory while it is still temporary (the caller renames
    the directory to ``final/`` after this, so the summary is complete when it appears). It holds
    the digest of the stage's ``metrics.jsonl`` (written before it), which the final directory's
    own digest, the pipeline's artefact, then covers."""
    path = Path(final_tmp) / SUMMARY
    history = Path(final_tmp).parent / HISTORY
    if history.is_file():
        summary = {**summary, "history_sha256": sha256_file(history)}
    path.write_text(json.dumps(json_safe(summary), indent=2))
    return path
