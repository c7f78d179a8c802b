"""What the engines share about a stage (`sent.engines.stage`): paths, step count, the finished
check and --fresh backup, and the atomic history and summary."""

from __future__ import annotations

import json
import math

import pytest

from sent.engines.stage import (
    FINAL,
    TrainingError,
    clear_finished,
    is_finished,
    read_history,
    stage_dir,
    stage_steps,
    start_model_for,
    write_history,
    write_summary,
)

from sent_testing import ROOT


@pytest.fixture(scope="module")
def cfg():
    from sent.config_loading import load_config

    return load_config(ROOT / "configs" / "toy.yaml", ["training.train_batch_size=16", "training.mini_batch_size=16"])


@pytest.mark.parametrize(
    ("epochs", "rows", "steps"),
    [
        (2, 775, 96),  # floor(2 * 775 / 16) = floor(96.875)
        (2, 759, 94),  # floor(94.875)
        (0.5, 64, 2),  # fractional epochs: floor(2.0)
        (1, 5, 1),  # fewer rows than a batch: still one step
    ],
)
def test_a_stage_takes_floor_epochs_times_rows_over_batch_steps(cfg, epochs, rows, steps):
    from sent.engines.verl import total_steps

    c = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs_per_stage": epochs})})
    assert stage_steps(c, rows) == steps
    assert total_steps(c, rows) == steps and total_steps(c, None) is None  # the verl engine counts alike


def test_stage_k_starts_from_stage_k_minus_1s_final_weights(cfg, tmp_path):
    assert start_model_for(cfg, tmp_path, 1) == cfg.model.path
    with pytest.raises(TrainingError, match="train stage 1 first"):
        start_model_for(cfg, tmp_path, 2)
    assert start_model_for(cfg, tmp_path, 2, must_exist=False) == str(tmp_path / "stage-1" / FINAL)
    final = stage_dir(tmp_path, 1) / FINAL
    final.mkdir(parents=True)
    write_summary(final, {"stage": 1})
    assert is_finished(stage_dir(tmp_path, 1)) and start_model_for(cfg, tmp_path, 2) == str(final)


def test_a_finished_stage_is_kept_unless_fresh_and_then_moved_aside(tmp_path):
    out = stage_dir(tmp_path, 1)
    clear_finished(out, 1, fresh=False)  # nothing there: nothing to do
    (out / FINAL).mkdir(parents=True)
    write_summary(out / FINAL, {"stage": 1, "steps": 3})
    with pytest.raises(TrainingError, match=r"stage 1 already finished at .*--fresh"):
        clear_finished(out, 1, fresh=False)
    with pytest.raises(KeyError):  # an engine chooses its own error type
        clear_finished(out, 1, fresh=False, error=KeyError)
    clear_finished(out, 1, fresh=True)
    assert not out.exists()
    (backup,) = tmp_path.glob("stage-1.old-*")
    assert json.loads((backup / FINAL / "stage.json").read_text())["steps"] == 3


def test_history_and_summary_are_json_with_nan_as_null(tmp_path):
    rows = [{"step": 1.0, "accuracy": 0.5}, {"step": 2.0, "accuracy": math.nan}]
    path = write_history(tmp_path / "stage-1", rows)
    assert path.read_text() == '{"step": 1.0, "accuracy": 0.5}\n{"step": 2.0, "accuracy": null}\n'
    assert read_history(tmp_path / "stage-1") == [rows[0], {"step": 2.0, "accuracy": None}]
    write_history(tmp_path / "stage-1", rows[:1])  # replaced, not appended; no temporary file left
    assert read_history(tmp_path / "stage-1") == rows[:1] and sorted(p.name for p in path.parent.iterdir()) == [
        "metrics.jsonl"
    ]
    summary = write_summary(tmp_path, {"last_metrics": {"kl": math.inf}, "path": tmp_path})
    assert json.loads(summary.read_text()) == {"last_metrics": {"kl": None}, "path": str(tmp_path)}
