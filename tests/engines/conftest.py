"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest

from sent_testing import toy_config


@pytest.fixture(scope="session")
def curriculum(tiny_toy, tmp_path_factory):
    """A real (small) curation of the tiny toy world, all in one stage: the tiny model's answers to
    most problems are all different (SE ties at ln 4), and tied problems share a stage, so a
    two-stage split can leave stage 1 a single row (one shard)."""
    from sent.curate import curate

    cfg = toy_config(tiny_toy, "sampling.n=4", "data.limit=24", "curriculum.shard_rows=2", "curriculum.n_stages=1")
    out = tmp_path_factory.mktemp("curriculum") / "curate"
    curate(cfg, out=out)
    return cfg, out
