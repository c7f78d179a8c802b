"""The tiny toy world that the tests and the kill trials (`scripts/kill_trials.py`) build: 300
problems a level, a toy model after 300 SFT steps, about 45 s on 2 cores.

They exercise the machinery (chat template, sampling, grading, clustering, training), not the
model's skill, but training needs groups with mixed rewards: at 150 SFT steps the model came out
of one 2-core machine at 0.1 greedy accuracy on L1 and L2, with every stage-1 problem of the
engine tests' curriculum all wrong (float results of SFT differ between CPUs). 300 steps leave it
weak but not that weak.
"""

from __future__ import annotations

from pathlib import Path

from sent.config import PromptConfig, ToyConfig
from sent.toy.bootstrap import BootstrapResult, bootstrap


def tiny_world_config(root: Path) -> ToyConfig:
    """The tiny world's settings, its data in ``root/data`` and its model in ``root/model``."""
    return ToyConfig(
        train_per_level=300,
        test_per_level=40,
        data_dir=str(root / "data"),
        model_dir=str(root / "model"),
        sft_steps=300,
        eval_per_level=10,
    )


def build_tiny_world(root: Path) -> BootstrapResult:
    """Build (or reuse, when up to date) the tiny world in ``root``."""
    return bootstrap(tiny_world_config(root), PromptConfig())
