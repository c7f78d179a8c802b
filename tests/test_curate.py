"""Curation: validation with reasons, the full run on the tiny toy model, the data contract,
loading the shards the way verl does, reuse, tamper detection, and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sent.curate import curate
from sent.data_contract import (
    CURRICULUM_SCHEMA,
    ContractError,
    load_curriculum,
    load_manifest,
    stage_files,
)
from sent.models import load_tokenizer
from sent.problems import CurationError, read_rows, validate_rows

from sent_testing import ROOT, parquet_difference, toy_config

BAD_ROWS = [
    {"id": "a", "problem": "Compute 1+1.", "answer": "2"},
    "this line is not JSON",
    {"id": "b", "problem": "Compute 2+2.", "answer": ""},  # empty answer
    {"id": "c", "answer": "5"},  # missing problem
    {"id": "d", "problem": 42, "answer": "42"},  # wrong type
    {"id": "a", "problem": "Compute 3+3.", "answer": "6"},  # duplicate id
    {"id": "e", "problem": "  compute   1+1. ", "answer": "2"},  # duplicate problem after normalisation
    {"id": "f", "problem": "Compute " + "+".join(["1"] * 200) + ".", "answer": "200"},  # prompt too long
    {"id": "g", "problem": "Compute 4+4.", "answer": 8},  # a numeric answer is fine
]


def write_jsonl(path, rows):
    with path.open("w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def test_validation_keeps_every_row_with_a_reason(tiny_toy, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", BAD_ROWS)
    cfg = toy_config(tiny_toy, f"data.train_path={path}")
    rows = list(read_rows(path))
    accepted, rejected = validate_rows(cfg, path, rows, load_tokenizer(tiny_toy.model_dir))
    assert len(accepted) + len(rejected) == len(BAD_ROWS)
    assert [(p.id, p.answer) for p in accepted] == [("a", "2"), ("g", "8")]
    assert [p.index for p in accepted] == [0, 1]
    reasons = {r.row: (r.field, r.reason) for r in rejected}
    assert reasons[2] == ("", "not valid JSON (Expecting value at column 1)")
    assert reasons[3] == ("answer", "field 'answer' is empty")
    assert reasons[4] == ("problem", "missing field 'problem'")
    assert reasons[5] == ("problem", "field 'problem' has type int, expected a string")
    assert reasons[6] == ("id", "duplicate id 'a' (first at row 1)")
    assert reasons[7] == ("problem", "duplicate problem (first at row 1)")
    assert reasons[8][0] == "problem" and "over data.max_prompt_tokens=128" in reasons[8][1]
    assert next(r for r in rejected if r.row == 2).original == "this line is not JSON"


def test_too_many_rejections_stop_the_run_and_keep_the_rejects(tiny_toy, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", BAD_ROWS)
    cfg = toy_config(tiny_toy, f"data.train_path={path}")
    out = tmp_path / "run"
    with pytest.raises(CurationError) as err:
        curate(cfg, out=out, sampler=None)
    msg = str(err.value)
    assert str(path) in msg and "7 of 9 rows rejected" in msg and "row 2" in msg
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()
    assert len(rejected) == 7 and rejected[0]["source_file"] == str(path)


def test_missing_input_is_a_clear_error(tiny_toy, tmp_path):
    cfg = toy_config(tiny_toy, f"data.train_path={tmp_path / 'nope.jsonl'}")
    with pytest.raises(CurationError, match="input not found"):
        curate(cfg, out=tmp_path / "run")


@pytest.fixture(scope="module")
def curated(tiny_toy, tmp_path_factory):
    cfg = toy_config(tiny_toy, "sampling.n=4", "sampling.chunk_size=25", "curriculum.shard_rows=16")
    out = tmp_path_factory.mktemp("cur") / "run"
    return cfg, curate(cfg, out=out, limit=60)


def test_curation_outputs_and_manifest(curated):
    _, result = curated
    out, m = result.out_dir, result.manifest
    assert not result.reused
    assert m["counts"] == {
        "input_rows": 60,
        "accepted": 60,
        "rejected": 0,
        "filtered": 0,
        "samples": 240,
        "se_undecided_problems": 0,  # toy answers are integers: decided in-process, never timed out
        "grade_undecided_samples": 0,
    }
    assert [f.name for f in sorted((out / "samples").glob("part-*"))] == [f"part-0000{i}.parquet" for i in range(3)]
    assert (out / "se_histogram.png").stat().st_size > 0 and (out / "se_vs_pass_rate.png").stat().st_size > 0
    listed = {e["path"] for e in m["files"]}
    assert {"scores.parquet", "rejected.parquet", "samples/part-00000.parquet", "se_histogram.png"} <= listed
    assert sum(s["count"] for s in m["curriculum"]["stages"]) == 60
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    samples = pq.read_table(out / "samples" / "part-00000.parquet").to_pylist()
    # a problem's score is recomputable from its samples
    first = [s for s in samples if s["index"] == 0]
    ids = [s["class_id"] for s in first]
    from sent.semantic import discrete_entropy

    assert scores[0]["semantic_entropy"] == pytest.approx(discrete_entropy(ids))
    assert scores[0]["pass_rate"] == sum(s["correct"] for s in first) / 4
    assert 0 <= min(r["semantic_entropy"] for r in scores) <= max(r["semantic_entropy"] for r in scores) <= np.log(4)


def test_stage_shards_follow_the_contract(curated):
    cfg, result = curated
    out = result.out_dir
    stage_rows = []
    for stage in range(1, cfg.curriculum.n_stages + 1):
        files = stage_files(out, stage)
        for f in files:
            assert pq.read_schema(f).equals(CURRICULUM_SCHEMA)  # one identical schema everywhere
            assert pq.ParquetFile(f).metadata.num_rows <= 16
        table = load_curriculum(out, stage)
        rows = table.to_pylist()
        se = [r["extra_info"]["semantic_entropy"] for r in rows]
        assert se == sorted(se)  # sorted by SE within a stage
        assert all(r["extra_info"]["stage"] == stage for r in rows)
        stage_rows.append(rows)
    if all(stage_rows):  # low entropy first
        assert max(r["extra_info"]["semantic_entropy"] for r in stage_rows[0]) <= min(
            r["extra_info"]["semantic_entropy"] for r in stage_rows[1]
        )
    row = stage_rows[0][0] if stage_rows[0] else stage_rows[1][0]
    assert row["prompt"][0]["role"] == "user" and "Please reason step by step" in row["prompt"][0]["content"]
    assert row["reward_model"]["style"] == "rule" and row["data_source"] == "toy"


def test_shards_load_like_verls_rlhf_dataset(curated):
    """verl's RLHFDataset reads each file with datasets.load_dataset("parquet") and concatenates."""
    import datasets

    _, result = curated
    files = [str(f) for s in (1, 2) for f in stage_files(result.out_dir, s)]
    frames = [datasets.load_dataset("parquet", data_files=f)["train"] for f in files]
    merged = datasets.concatenate_datasets(frames)
    assert len(merged) == 60
    assert merged[0]["reward_model"]["ground_truth"]
    assert merged[0]["prompt"][0]["role"] == "user" and isinstance(merged[0]["prompt"][0]["content"], str)


def test_rerun_reuses_a_finished_curation(curated):
    cfg, result = curated

    class Forbidden:
        def generate(self, *a, **k):
            raise AssertionError("a finished curation must not sample again")

    again = curate(cfg, out=result.out_dir, limit=60, sampler=Forbidden())
    assert again.reused and again.manifest == result.manifest
    with pytest.raises(CurationError, match="another configuration"):
        curate(toy_config_from(cfg, "sampling.n=5"), out=result.out_dir, limit=60)


def toy_config_from(cfg, *overrides):
    from sent.config_loading import load_config

    return load_config(cfg.source, [*cfg.overrides, *overrides])


def test_tampered_or_truncated_shards_are_detected(curated, tmp_path):
    import shutil

    _, result = curated
    copy = tmp_path / "copy"
    shutil.copytree(result.out_dir, copy)
    shard = stage_files(copy, 1)[0] if stage_files(copy, 1) else stage_files(copy, 2)[0]
    stage = 1 if stage_files(copy, 1) else 2
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="sha256"):
        load_curriculum(copy, stage)
    shard.write_bytes(bytes(data[:100]))
    with pytest.raises(ContractError, match="bytes"):
        load_curriculum(copy, stage)
    (copy / "manifest.json").unlink()
    with pytest.raises(ContractError, match=r"no manifest\.json"):
        load_manifest(copy)
    with pytest.raises(ContractError, match="stage 3 does not exist"):
        stage_files(result.out_dir, 3)


def test_a_damaged_or_unsealed_part_of_an_unfinished_curation_is_sampled_again(curated, tmp_path):
    """An unfinished curation (no manifest yet) resumes from its parts only where their digests
    hold: one flipped bit in a part, or a part with no digest (written by an older version or cut
    short), is sampled again, and the curation comes out as the uninterrupted one."""
    import shutil

    cfg, result = curated
    copy = tmp_path / "run"
    shutil.copytree(result.out_dir, copy)
    # as if stopped before the end: the state file a running curation keeps, and no manifest yet
    identity = json.loads((copy / "manifest.json").read_text())["identity"]
    (copy / "curation.json").write_text(json.dumps({"identity": identity}))
    (copy / "manifest.json").unlink()
    part1, part2 = copy / "samples" / "part-00001.parquet", copy / "samples" / "part-00002.parquet"
    data = bytearray(part1.read_bytes())
    data[len(data) // 2] ^= 0x01
    part1.write_bytes(bytes(data))
    (part2.parent / f".{part2.name}.sha256").unlink()
    untouched = copy / "samples" / "part-00000.parquet"
    mtime = untouched.stat().st_mtime_ns
    resumed = curate(cfg, out=copy, limit=60)
    assert untouched.stat().st_mtime_ns == mtime  # an intact part is not redone
    for name in ("scores.parquet", "samples/part-00001.parquet", "samples/part-00002.parquet"):
        assert parquet_difference(copy / name, result.out_dir / name) is None
    assert resumed.manifest["curriculum"] == result.manifest["curriculum"]


@pytest.mark.parametrize("killed", ["before the rename", "after the rename"])
def test_a_part_is_sealed_before_it_takes_its_name(curated, tmp_path, monkeypatch, killed):
    """A kill between a part's rename and its digest left an unsealed part that a rerun sampled
    again (a CI failure). The digest is written first: a kill on either side of the rename leaves
    the part missing, or whole and sealed."""
    import sent.data_contract
    from sent.curate import _chunk_complete, write_part

    _, result = curated
    table = pq.read_table(result.out_dir / "samples" / "part-00000.parquet")
    path = tmp_path / "samples" / "part-00000.parquet"
    replace = sent.data_contract._atomic_replace

    def kill_at_rename(src, dst):
        if Path(dst) != path:  # the digest's own atomic write
            return replace(src, dst)
        if killed == "after the rename":
            replace(src, dst)
        raise KeyboardInterrupt  # stands for SIGKILL: nothing after this line runs

    monkeypatch.setattr(sent.data_contract, "_atomic_replace", kill_at_rename)
    with pytest.raises(KeyboardInterrupt):
        write_part(table, path)
    assert (tmp_path / "samples" / ".part-00000.parquet.sha256").is_file()
    assert _chunk_complete(path, table.num_rows) is (killed == "after the rename")


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_result(tiny_toy, tmp_path):
    args = [
        f"model.path={tiny_toy.model_dir}",
        f"data.train_path={tiny_toy.train_path}",
        "sampling.n=4",
        "sampling.chunk_size=10",
        "sampling.batch_size=10",
    ]
    cmd = [
        sys.executable,
        "-m",
        "sent.cli",
        "curate",
        "--config",
        str(ROOT / "configs" / "toy.yaml"),
        "--limit",
        "50",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "samples" / "part-00001.parquet").exists():
        assert proc.poll() is None, "curation ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists()
    done_before = {p.name: p.stat().st_mtime_ns for p in (killed / "samples").glob("part-*.parquet")}
    subprocess.run([*cmd, "--out", str(killed), *args], check=True, capture_output=True, timeout=600)
    for name, mtime in done_before.items():  # finished chunks were not redone
        assert (killed / "samples" / name).stat().st_mtime_ns == mtime
    clean = tmp_path / "clean"
    subprocess.run([*cmd, "--out", str(clean), *args], check=True, capture_output=True, timeout=600)
    for name in ["scores.parquet", *[f"samples/part-0000{i}.parquet" for i in range(5)]]:
        assert parquet_difference(killed / name, clean / name, float_noise=True) is None
    for stage in (1, 2):
        assert load_curriculum(killed, stage).equals(load_curriculum(clean, stage))


def test_parquet_and_datasets_inputs_with_a_field_map(tiny_toy, tmp_path):
    import datasets
    import pyarrow as pa

    rows = [{"question": f"Compute {i}+1.", "final": str(i + 1), "uid": f"q{i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    fields = ["data.fields.problem=question", "data.fields.answer=final", "data.fields.id=uid"]
    tok = load_tokenizer(tiny_toy.model_dir)
    for path in (tmp_path / "in.parquet", tmp_path / "ds"):
        cfg = toy_config(tiny_toy, f"data.train_path={path}", *fields)
        accepted, rejected = validate_rows(cfg, path, list(read_rows(path)), tok)
        assert [(p.id, p.problem, p.answer) for p in accepted] == [(r["uid"], r["question"], r["final"]) for r in rows]
        assert not rejected
    assert len(list(read_rows(tmp_path / "in.parquet", limit=2))) == 2


def test_drop_zero_signal_filters_all_right_and_all_wrong(curated, tiny_toy, tmp_path):
    from sent.staging import assign

    cfg, result = curated
    scores = pq.read_table(result.out_dir / "scores.parquet").to_pylist()
    for r in scores:
        r["stage"], r["filtered"] = None, False
    cfg_drop = toy_config_from(cfg, "curriculum.drop_zero_signal=true")
    assign(cfg_drop, scores)
    for r in scores:
        assert r["filtered"] == (r["pass_rate"] in (0.0, 1.0))
        assert (r["stage"] is None) == r["filtered"]


def test_cli_reports_errors_with_exit_code_2(tiny_toy, tmp_path, capsys):
    from sent.cli import main

    code = main(
        [
            "curate",
            "--config",
            str(ROOT / "configs" / "toy.yaml"),
            f"data.train_path={tmp_path}/x.jsonl",
            f"model.path={tiny_toy.model_dir}",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "input not found" in capsys.readouterr().err
    code = main(["curate", "--config", str(ROOT / "configs" / "toy.yaml"), "sampling.bogus=1"])
    assert code == 2 and "sampling.bogus: unknown key" in capsys.readouterr().err


def test_fresh_data_at_the_same_path_gets_a_new_curation(tiny_toy, tmp_path):
    """A retraining schedule re-reads the same path: new content must not reuse the old curriculum."""
    import os

    from sent.curate import default_out_dir

    data = tmp_path / "problems.jsonl"
    original = tiny_toy.rl_path.read_text()
    data.write_text(original)
    cfg = toy_config(tiny_toy, f"data.train_path={data}")
    first = default_out_dir(cfg, cfg.data.limit)
    data.write_text(original + original.splitlines()[0] + "\n")
    os.utime(data, ns=(1, 1))  # a new mtime even within the clock's resolution
    assert default_out_dir(cfg, cfg.data.limit) != first
    data.write_text(original)
    assert default_out_dir(cfg, cfg.data.limit) == first  # same content, same curation


def test_a_foreign_out_directory_is_refused_and_left_as_it_was(curated, tmp_path):
    cfg, _ = curated
    foreign = tmp_path / "papers"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CurationError, match=rf"{foreign} exists and is not a curation directory; choose another --out"):
        curate(cfg, out=foreign, limit=10)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # no .lock left behind
