"""Helpers shared by the tests (imported as `sent_testing`: verl installs a top-level `tests`
package into site-packages, which would shadow ours as `tests.conftest`)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


PINNED = ["curriculum.drop_zero_signal=false", "training.epochs_per_stage=1", "training.ref_kl_coef=0.0"]
"""The settings of configs/toy.yaml that the tests were written against: the demo's calibrated
defaults (docs/toy-calibration.md) would drop most of the tiny model's problems and double its steps."""


def toy_config(tiny_toy, *overrides: str):
    """configs/toy.yaml pointed at the tiny model and its world, with overrides."""
    from sent.config_loading import load_config

    return load_config(
        ROOT / "configs" / "toy.yaml",
        [
            f"model.path={tiny_toy.model_dir}",
            f"data.train_path={tiny_toy.train_path}",
            # the toy benchmark (test split) of the tiny world, never the checkout's data/toy
            f"toy.data_dir={tiny_toy.test_path.parent}",
            f"toy.model_dir={tiny_toy.model_dir}",
            *PINNED,
            *overrides,
        ],
    )


def pipeline_config(tiny_toy, **sections) -> dict:
    """A toy config small enough for a test: 48 problems, N = 4, two stages of 3 steps."""
    toy = json.loads((Path(tiny_toy.model_dir) / "bootstrap.json").read_text())["toy"]  # bootstrap up to date
    cfg = {
        "seed": 0,
        "model": {"path": str(tiny_toy.model_dir)},
        "data": {"train_path": str(tiny_toy.rl_path), "data_source": "toy", "max_prompt_tokens": 128, "limit": 48},
        "sampling": {"n": 4, "max_new_tokens": 32, "batch_size": 64, "chunk_size": 24},
        "curriculum": {"n_stages": 2, "shard_rows": 8},
        "training": {
            "group_size": 4,
            "train_batch_size": 8,
            "mini_batch_size": 8,
            "micro_batch_size": 32,
            "epochs_per_stage": 1,
            "lr": 1e-4,
            "max_prompt_tokens": 128,
            "max_response_tokens": 32,
            "ref_kl_coef": 0.0,
            "save_every": 1,
        },
        "evaluation": {"benchmarks": ["toy"], "n": 2, "k": [1, 2], "max_new_tokens": 32, "limit": 12},
        "toy": toy,
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


@contextmanager
def prefect_harness(results_dir: Path):
    """The real Prefect engine on a temporary server, with task results stored in ``results_dir``."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(results_dir)}), prefect_test_harness():
        yield


FLOAT_NOISE = 1e-4
"""Relative tolerance of `parquet_difference(..., float_noise=True)`: two processes that sample
the same chunk have recorded sequence log-probabilities (and so the likelihood-weighted SE) that
differ in the seventh digit, now and then (seen under ``make test``; not memory alignment of the
matmuls, which was checked), and once in the fifth (stop 37: -19.07510 against -19.07394, the
same tokens; the rerun passed). Everything discrete (texts, answers, classes, grades, stages) is
compared exactly."""


def _same(x, y, float_noise: bool) -> bool:
    import math

    if isinstance(x, float) and isinstance(y, float):
        if x != x and y != y:  # NaN in both
            return True
        return x == y or (float_noise and math.isclose(x, y, rel_tol=FLOAT_NOISE, abs_tol=FLOAT_NOISE))
    return x == y


def parquet_difference(a: Path, b: Path, *, float_noise: bool = False) -> str | None:
    """Where two Parquet files' tables differ (schema, rows, or the first differing cell of each
    column), or None when they are equal (floats within `FLOAT_NOISE` with ``float_noise``): a
    failing comparison then says what differs."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.equals(tb):
        return None
    if not ta.schema.equals(tb.schema):
        return f"{a.name}: schemas differ: {ta.schema} vs {tb.schema}"
    if ta.num_rows != tb.num_rows:
        return f"{a.name}: {ta.num_rows} rows vs {tb.num_rows}"
    diffs = []
    for name in ta.column_names:
        xs, ys = ta.column(name).to_pylist(), tb.column(name).to_pylist()
        rows = [i for i, (x, y) in enumerate(zip(xs, ys, strict=True)) if not _same(x, y, float_noise)]
        if rows:
            i = rows[0]
            diffs.append(f"{name}: {len(rows)} rows, first row {i}: {xs[i]!r} vs {ys[i]!r}")
    return f"{a} vs {b}: " + "; ".join(diffs) if diffs else None
