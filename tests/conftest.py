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
    """A real toy world and a briefly trained toy model (`sent.toy.tiny`, about 45 s), shared by the tests."""
    from sent.toy.tiny import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("toy"))
