"""Helpers shared by the tests (imported as `sent_testing`: verl installs a top-level `tests`
package into site-packages, which would shadow ours as `tests.conftest`)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def toy_config(tiny_toy, *overrides: str):
    """configs/toy.yaml pointed at the tiny model, with overrides."""
    from sent.config import load_config

    return load_config(
        ROOT / "configs" / "toy.yaml",
        [f"model.path={tiny_toy.model_dir}", f"data.train_path={tiny_toy.train_path}", *overrides],
    )
