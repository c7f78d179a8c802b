"""Shared fixtures. Tests read the shared data from ../shared/data (beside the project root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sent_testing import SHARED_DATA

# before Prefect is imported: no telemetry from test servers, our loggers in flow-run logs
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sent,tasks,flows")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_toy(tmp_path_factory):
    """A real toy world and a briefly trained toy model (about 45 s), shared by the tests.

    Tests exercise the machinery (chat template, sampling, grading, clustering, training), not the
    model's skill, but the training tests need groups with mixed rewards: at 150 SFT steps the
    model came out of one 2-core machine at 0.1 greedy accuracy on L1 and L2, with every stage-1
    problem of the engine tests' curriculum all wrong (float results of SFT differ between CPUs).
    300 steps leave it weak but not that weak."""
    from sent.config import PromptConfig, ToyConfig
    from sent.toy.bootstrap import bootstrap

    root = tmp_path_factory.mktemp("toy")
    cfg = ToyConfig(
        train_per_level=300,
        test_per_level=40,
        data_dir=str(root / "data"),
        model_dir=str(root / "model"),
        sft_steps=300,
        eval_per_level=10,
    )
    return bootstrap(cfg, PromptConfig())
