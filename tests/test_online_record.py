"""The record of an online stage on verl (`sent.online_record`) and the stream it feeds
(`sent.online_stream`): what the reward function writes, what a kill leaves, and the records a
stream refuses. The stream inside verl's dataloader is tested in tests/engines/test_verl_online.py."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import pytest

from sent import online_record
from sent.online_stream import OnlineStream, StreamSettings
from sent.rewards import compute_score


def _settings(tmp_path: Path, **kw) -> StreamSettings:
    base = {
        "record": str(tmp_path / "record.jsonl"),
        "history": str(tmp_path / "online_se.parquet"),
        "rows": str(tmp_path / "rows.json"),
        "checkpoints": str(tmp_path / "checkpoints"),
        "batch_size": 2,
        "group_size": 2,
        "seed": 0,
        "shuffle": False,
        "filter_zero": False,
    }
    return StreamSettings(**{**base, **kw})


def _grade(stream: OnlineStream, position: int, answers: list[str]) -> None:
    """The rollouts of ``position`` graded by our reward function as verl's reward loop calls it."""
    row, epoch = stream.row_at(position)
    info = {"id": stream.ids[row], online_record.KEY: online_record.place(position, row, epoch, stream.settings.record)}
    for a in answers:
        compute_score("toy", f"\\boxed{{{a}}}", "1", dict(info))


def test_the_reward_function_records_training_rollouts_only(tmp_path):
    path = tmp_path / "record.jsonl"
    place = online_record.place(7, 3, 2, path)
    result = compute_score("toy", "so \\boxed{1/2}", "0.5", {"id": "p3", online_record.KEY: place})
    assert result["acc"] is True and result["score"] == 1.0  # grading is unchanged
    compute_score("toy", "\\boxed{2}", "0.5", {"id": "v0", "index": 0})  # a validation row: no place
    compute_score("toy", "no answer", "0.5", {"id": "p3", online_record.KEY: place})
    records, end = online_record.read(path)
    assert records == [
        online_record.Record(position=7, row=3, epoch=2, id="p3", answer="1/2", acc=True),
        online_record.Record(position=7, row=3, epoch=2, id="p3", answer=None, acc=False),
    ]
    assert end == path.stat().st_size


def test_the_reward_module_keeps_every_public_name_of_grading():
    import sent.grading
    import sent.rewards

    assert sorted(sent.rewards.__all__) == sorted(sent.grading.__all__)
    assert all(
        getattr(sent.rewards, n) is getattr(sent.grading, n) for n in sent.grading.__all__ if n != "compute_score"
    )


def _append_many(path: str, worker: int) -> None:
    place = online_record.place(worker, worker, 1, path)
    for i in range(200):
        online_record.append({online_record.KEY: place}, f"p{worker}", "x" * (i % 50), i % 2 == 0)


def test_concurrent_reward_workers_append_whole_lines(tmp_path):
    path = str(tmp_path / "record.jsonl")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_append_many, [(path, w) for w in range(4)])
    records, _ = online_record.read(path)
    assert sorted((r.position, r.answer) for r in records) == sorted(
        (w, "x" * (i % 50)) for w in range(4) for i in range(200)
    )


def test_a_line_cut_by_a_kill_is_left_out_then_dropped_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "record.jsonl"
    for position in (0, 1, 2):
        online_record.append({online_record.KEY: online_record.place(position, position, 1, path)}, "p", "1", True)
    with path.open("a") as f:
        f.write('{"position": 3, "ro')
    records, end = online_record.read(path)
    assert [r.position for r in records] == [0, 1, 2] and end < path.stat().st_size
    assert [r.position for r in online_record.keep_before(path, 2)] == [0, 1]
    assert path.read_text().count("\n") == 2 and path.read_text().endswith("\n")  # rewritten: cut line gone
    with path.open("a") as f:
        f.write('{"position": 1}\n')
    with pytest.raises(ValueError, match=r"record\.jsonl, line 3: not a record of the online SE"):
        online_record.read(path)


def test_the_stream_orders_epoch_2_by_the_se_of_the_recorded_answers(tmp_path):
    """Three rows, batch 2, G 2, no shuffle. Epoch 1 is rows 0, 1, 2 (places 0-2); place 3 starts
    epoch 2, decided at step 2's first place (place 2) on step 1 alone: row 0 answered 1 and 1
    (SE 0), row 1 answered 1 and 2 (SE ln 2), row 2 not yet measured keeps its curation SE 0.5.
    Epoch 2 is therefore rows 0, 2, 1."""
    stream = OnlineStream(_settings(tmp_path), [0.9, 0.1, 0.5], ["a", "b", "c"])
    _grade(stream, 0, ["1", "1"])
    _grade(stream, 1, ["1", "2"])
    assert [stream.row_at(p) for p in (2, 3)] == [(2, 1), (0, 2)]
    _grade(stream, 2, ["3", "3"])
    _grade(stream, 3, ["1", "2"])
    assert [stream.row_at(p) for p in (4, 5)] == [(2, 2), (1, 2)]
    assert stream.metrics[1]["online_se_mean"] == pytest.approx(math.log(2) / 2)
    assert stream.metrics[2]["online_se_zero"] == 0.5 and stream.metrics[2]["epoch"] == 2.0


def test_a_record_from_other_settings_or_without_its_steps_is_refused(tmp_path):
    stream = OnlineStream(_settings(tmp_path), [0.9, 0.1, 0.5], ["a", "b", "c"])
    for p in (0, 1):
        _grade(stream, p, ["1", "2"])
    shuffled = OnlineStream(_settings(tmp_path, shuffle=True, seed=3), [0.9, 0.1, 0.5], ["a", "b", "c"])
    assert shuffled.order.static_epoch(1)[0] != 0  # this seed's epoch 1 does not start with row 0
    with pytest.raises(ValueError, match=r"place 0 recorded row 0 \('a', epoch 1\), and this stage's order puts"):
        shuffled.resume(1)
    Path(stream.settings.record).unlink()
    with pytest.raises(ValueError, match="holds 0 complete steps, and step 2 needs the 1 before it"):
        OnlineStream(_settings(tmp_path), [0.9, 0.1, 0.5], ["a", "b", "c"]).resume(1)


def test_the_settings_travel_as_json_and_the_rows_file_rebuilds_the_stream(tmp_path):
    settings = _settings(tmp_path, semantic={"pool_missing": True})
    assert StreamSettings.from_json(settings.to_json()) == settings
    stream = OnlineStream(settings, [0.9, 0.1], ["a", "b"])
    stream.write_rows_file()
    again = OnlineStream.from_rows_file(settings)
    assert (again.ids, again.offline_se, again.semantic.pool_missing) == (["a", "b"], [0.9, 0.1], True)
    assert json.loads(Path(settings.rows).read_text()) == {"ids": ["a", "b"], "offline_se": [0.9, 0.1]}
