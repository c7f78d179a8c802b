"""The on-disk contract of a curation (`sent.data_contract`) on a hand-built directory: atomic
writers, the manifest's checks (each way a file can go wrong names the file), stage shards in
order, and the schema of what verl reads. No model: the full curation is in test_curate.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sent.data_contract import (
    CURRICULUM_SCHEMA,
    MANIFEST,
    REJECTED_SCHEMA,
    SCHEMA_VERSION,
    ContractError,
    file_entry,
    json_safe,
    load_curriculum,
    load_manifest,
    sha256_file,
    stage_files,
    write_json,
    write_rows,
    write_table,
    write_text,
)


def curriculum_row(i: int, stage: int) -> dict:
    return {
        "data_source": "toy",
        "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
        "extra_info": {
            "index": i,
            "id": f"p{i}",
            "semantic_entropy": 0.1 * i,
            "weighted_semantic_entropy": 0.1 * i,
            "pass_rate": 0.5,
            "n_classes": 2,
            "stage": stage,
        },
    }


@pytest.fixture
def curation(tmp_path) -> Path:
    """Two stages: stage 1 in two shards (rows 0-1, 2), stage 2 in one (rows 3-4)."""
    shards = {
        "stage-1/part-00000.parquet": [0, 1],
        "stage-1/part-00001.parquet": [2],
        "stage-2/part-00000.parquet": [3, 4],
    }
    for rel, rows in shards.items():
        stage = int(rel[6])
        write_rows([curriculum_row(i, stage) for i in rows], tmp_path / rel, CURRICULUM_SCHEMA)
    write_rows(
        [{"source_file": "in.jsonl", "row": 7, "field": "answer", "reason": "empty", "original": "{}"}],
        tmp_path / "rejected.parquet",
        REJECTED_SCHEMA,
    )
    files = [file_entry(tmp_path / rel, tmp_path) for rel in [*shards, "rejected.parquet"]]
    manifest = {"schema_version": SCHEMA_VERSION, "curriculum": {"n_stages": 2}, "files": files}
    write_json(manifest, tmp_path / MANIFEST)
    return tmp_path


def test_writers_leave_only_the_final_file(tmp_path):
    entry = write_rows([curriculum_row(0, 1)], tmp_path / "a" / "x.parquet", CURRICULUM_SCHEMA)
    write_json({"k": 1}, tmp_path / "a" / "x.json")
    write_text("hello\n", tmp_path / "a" / "x.md")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json", "x.md", "x.parquet"]  # no .tmp-*
    path = tmp_path / "a" / "x.parquet"
    assert entry == {"rows": 1, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    assert pq.read_table(path).schema.equals(CURRICULUM_SCHEMA)
    assert (tmp_path / "a" / "x.md").read_text() == "hello\n"


def test_a_table_whose_columns_differ_from_the_contract_is_refused(tmp_path):
    table = pa.table({"source_file": ["f"], "row": [1], "reason": ["r"]})  # "field" and "original" missing
    with pytest.raises(ContractError, match=r"x\.parquet: columns \['source_file', 'row', 'reason'\]"):
        write_table(table, tmp_path / "x.parquet", REJECTED_SCHEMA)
    assert not (tmp_path / "x.parquet").exists()


def test_a_table_is_cast_to_the_contract(tmp_path):
    # int32 rows become int64 as the contract says
    columns = {
        "source_file": ["f"],
        "row": pa.array([3], pa.int32()),
        "field": ["a"],
        "reason": ["r"],
        "original": ["o"],
    }
    table = pa.table(columns)
    write_table(table, tmp_path / "x.parquet", REJECTED_SCHEMA)
    assert pq.read_table(tmp_path / "x.parquet").schema.field("row").type == pa.int64()


def test_json_safe_turns_what_json_cannot_hold_into_values_it_can():
    got = json_safe({"a": math.nan, 1: [math.inf, -math.inf, 1.5], "p": Path("/x/y"), "t": (1, "s")})
    assert got == {"a": None, "1": [None, None, 1.5], "p": "/x/y", "t": [1, "s"]}


def test_write_json_returns_what_it_wrote(tmp_path):
    written = write_json({"loss": math.nan, "step": 3}, tmp_path / "m.json")
    assert written == {"loss": None, "step": 3} == json.loads((tmp_path / "m.json").read_text())


def test_a_sound_curation_loads_its_stages_in_order(curation):
    manifest = load_manifest(curation)
    assert [Path(p).relative_to(curation).as_posix() for p in stage_files(curation, 1, manifest)] == [
        "stage-1/part-00000.parquet",
        "stage-1/part-00001.parquet",
    ]
    one = load_curriculum(curation, 1)
    assert one.schema.equals(CURRICULUM_SCHEMA)
    assert [r["id"] for r in one.column("extra_info").to_pylist()] == ["p0", "p1", "p2"]
    assert [r["id"] for r in load_curriculum(curation, 2).column("extra_info").to_pylist()] == ["p3", "p4"]


@pytest.mark.parametrize("stage", [0, 3])
def test_a_stage_out_of_range_is_named(curation, stage):
    with pytest.raises(ContractError, match=rf"stage {stage} does not exist \(stages 1\.\.2\)"):
        stage_files(curation, stage)


def _append_byte(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"\0")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.unlink(), "stage-1/part-00001.parquet is listed in the manifest but missing"),
        (_append_byte, r"stage-1/part-00001.parquet has \d+ bytes, the manifest says \d+"),
        (_flip_last_byte, "stage-1/part-00001.parquet does not match its sha256 in the manifest"),
    ],
    ids=["missing", "truncated-or-grown", "altered-same-size"],
)
def test_each_way_a_shard_can_go_wrong_names_the_file(curation, damage, message):
    damage(curation / "stage-1" / "part-00001.parquet")
    with pytest.raises(ContractError, match=message):
        load_manifest(curation)
    with pytest.raises(ContractError, match=message):
        load_curriculum(curation, 1)
    # only the damaged stage is refused: stage 2 is checked on its own files
    assert load_curriculum(curation, 2).num_rows == 2
    assert load_manifest(curation, verify=False)["curriculum"]["n_stages"] == 2


def test_a_directory_without_a_readable_manifest_is_refused(curation, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ContractError, match=re.escape("no manifest.json (an unfinished or foreign directory)")):
        load_manifest(empty)
    (curation / MANIFEST).write_text('{"schema_version": 1, "files": [')
    with pytest.raises(ContractError, match=re.escape("manifest.json: not valid JSON")):
        load_manifest(curation)


def test_another_schema_version_is_refused(curation):
    manifest = json.loads((curation / MANIFEST).read_text())
    write_json({**manifest, "schema_version": SCHEMA_VERSION + 1}, curation / MANIFEST)
    with pytest.raises(ContractError, match=f"schema version {SCHEMA_VERSION + 1}, this code reads {SCHEMA_VERSION}"):
        load_manifest(curation)


def test_a_shard_of_another_schema_is_refused_even_when_its_checksum_matches(curation):
    # a shard rewritten with a column missing, and the manifest updated to match it
    shard = curation / "stage-2" / "part-00000.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["ability"]), shard)
    manifest = json.loads((curation / MANIFEST).read_text())
    manifest["files"] = [file_entry(curation / e["path"], curation) for e in manifest["files"]]
    write_json(manifest, curation / MANIFEST)
    with pytest.raises(
        ContractError, match=re.escape("part-00000.parquet: schema differs from the curriculum contract")
    ):
        load_curriculum(curation, 2)


def test_file_entries_are_relative_and_count_parquet_rows(curation):
    entry = file_entry(curation / "stage-2" / "part-00000.parquet", curation)
    assert entry["path"] == "stage-2/part-00000.parquet" and entry["rows"] == 2
    (curation / "notes.md").write_text("x")
    assert file_entry(curation / "notes.md", curation) == {
        "path": "notes.md",
        "sha256": sha256_file(curation / "notes.md"),
        "bytes": 1,
    }
