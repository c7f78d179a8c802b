"""The local engine's checkpoints on disk: where they are, which one is intact, and how one is
written so that a crash never leaves a half-written one in its place.

A checkpoint is a directory ``checkpoints/step-NNNNNN`` (the final weights are ``final``). It
is filled in a hidden temporary directory, sealed (`sent.integrity`: the seal is written last,
so a directory without it was never finished) and renamed into place.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from sent.engines.stage import TrainingError
from sent.integrity import directory_problem, seal_directory

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def step_checkpoint(out: Path, step: int) -> Path:
    """Where the checkpoint after ``step`` steps of the stage in ``out`` goes."""
    return out / CHECKPOINTS / f"step-{step:06d}"


def checkpoints(out: Path) -> list[Path]:
    """The stage's step checkpoints, oldest first."""
    root = out / CHECKPOINTS
    return sorted(p for p in root.glob("step-*") if (p / "state.pt").is_file()) if root.is_dir() else []


def intact_checkpoint(out: Path, stage: int) -> Path | None:
    """The newest checkpoint whose files are the ones that were written; a damaged one is passed
    over for the one before it (its steps are recomputed). None when there is none at all."""
    found = checkpoints(out)
    for ckpt in reversed(found):
        if not (ckpt / "state.json").is_file():
            raise TrainingError(
                f"{ckpt} was written by an older version (no state.json) and is not loaded; "
                "retrain the stage with --fresh (fresh=True)"
            )
        problem = directory_problem(ckpt)
        if problem is None:
            return ckpt
        logger.warning("stage %d: %s; not resumed from it", stage, problem)
    if found:
        raise TrainingError(
            f"stage {stage}: no intact checkpoint in {out / CHECKPOINTS} "
            f"({directory_problem(found[-1])}); retrain the stage with --fresh (fresh=True)"
        )
    return None


def write_atomically(target: Path, fill: Callable[[Path], None], *, seal: bool) -> Path:
    """Fill a temporary directory beside ``target`` with ``fill``, seal it if asked, and rename
    it to ``target`` (replacing what was there)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    if seal:
        seal_directory(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
