"""`sent data fetch`: local stand-ins of the hub datasets (built with `datasets`, in each
source's own columns) go through the real loading and mapping code; the shared benchmarks come out
of ``--from`` unchanged; bad input is refused with the file, the row and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sent.cli import main
from sent.config_loading import load_config
from sent.data_contract import sha256_file
from sent.data_sources import DAPO_PREFIX, DAPO_SUFFIX, SOURCES, SourceError, answer_text, unwrap_dapo
from sent.evaluation import benchmark_levels, load_benchmark
from sent.fetch import fetch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "benchmarks"
BENCHMARKS = [name for name, s in SOURCES.items() if s.kind == "benchmark"]


def dapo_prompt(problem: str) -> list[dict]:
    """DAPO's chat prompt around a problem, as the hub file has it."""
    instruction = f"{DAPO_PREFIX} The last line of your response should be of the form Answer: $Answer"
    return [{"role": "user", "content": f"{instruction}\n\n{problem}{DAPO_SUFFIX}."}]


def hub_rows(name: str, count: int) -> list[dict]:
    """``count`` rows in the columns of ``name``'s hub dataset."""
    rows = []
    for i in range(count):
        problem, answer = f"What is {i} + 1?", str(i + 1)
        if name == "aime24":
            rows.append(
                {"id": 60 + i, "problem": problem, "solution": "...", "answer": answer, "url": "u", "year": "2024"}
            )
        elif name == "math500":
            rows.append(
                {"problem": problem, "solution": "s", "answer": answer, "subject": "Algebra",
                 "level": 1 + i % 5, "unique_id": f"test/algebra/{i}.json"}
            )  # fmt: skip
        elif name == "olympiadbench":
            final = [f"${i + 1}$"] if i % 2 else [f"${i}$", f"${i + 1}$"]  # one answer, or several
            rows.append({"id": 1000 + i, "question": problem, "final_answer": final, "is_multiple_answer": i % 2 == 0})
        elif name in ("amc23", "minerva"):
            rows.append({"id": i, "question": problem, "answer": float(i + 1) if name == "amc23" else answer})
        else:
            rows.append({"problem": problem, "answer": answer})
    return rows


def save_to_disk(rows: list[dict], path: Path, split: str) -> None:
    import datasets

    datasets.DatasetDict({split: datasets.Dataset.from_list(rows)}).save_to_disk(str(path))


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory) -> Path:
    """A local copy of every source in its hub columns: `datasets` directories for the benchmarks
    (with their known sizes), verl's Parquet file for DAPO-Math-17k: 5 problems, each 3 times, one
    repeat with another answer."""
    import datasets

    root = tmp_path_factory.mktemp("hub")
    for name in BENCHMARKS:
        save_to_disk(hub_rows(name, SOURCES[name].rows or 0), root / name, SOURCES[name].split)
    dapo = [
        {
            "data_source": "math_dapo",
            "prompt": dapo_prompt(f"Find  {i} * 2." if copy == 1 else f"Find {i} * 2."),  # whitespace differs
            "ability": "MATH",
            "reward_model": {"ground_truth": str(2 * i + (copy == 2 and i == 4)), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"uuid-{i}-{copy}"},
        }
        for copy in range(3)
        for i in range(5)
    ]
    datasets.Dataset.from_list(dapo).to_parquet(str(root / "dapo-math-17k.parquet"))
    return root


def test_every_source_maps_from_its_hub_columns(hub_copy, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "fetch", "--from", str(hub_copy), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "15 read, 10 duplicate problems removed (1 with another answer than the kept one's)" in printed

    for name in BENCHMARKS:
        problems = load_benchmark(out / "benchmarks" / f"{name}.jsonl")
        assert len(problems) == SOURCES[name].rows
        assert [p.id for p in problems[:2]] == [f"{name}-0000", f"{name}-0001"]  # ours, in source order
        assert problems[3].problem == "What is 3 + 1?"
    rows = [json.loads(line) for line in (out / "benchmarks" / "olympiadbench.jsonl").open()]
    assert (rows[0]["answer"], rows[1]["answer"], rows[1]["source_id"]) == ("$0$, $1$", "$2$", "1001")
    amc = load_benchmark(out / "benchmarks" / "amc23.jsonl")
    assert amc[0].answer == "1"  # the float 1.0 as the integer it is
    assert benchmark_levels(out / "benchmarks" / "math500.jsonl")["math500-0007"] == "L3"  # 1 + 7 % 5
    assert json.loads((out / "benchmarks" / "aime24.jsonl").open().readline())["source_id"] == "60"

    dapo = pq.read_table(out / "datasets" / "dapo-math-17k.parquet").to_pylist()
    assert [r["problem"] for r in dapo] == [f"Find {i} * 2." for i in range(5)]  # unwrapped, first of each kept
    assert [r["answer"] for r in dapo] == ["0", "2", "4", "6", "8"]
    assert [r["id"] for r in dapo][:2] == ["dapo-math-17k-000000", "dapo-math-17k-000001"]
    assert dapo[0]["source_id"] == "uuid-0-0"

    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert set(manifest) == {SOURCES[n].filename for n in SOURCES}
    for rel, entry in manifest.items():
        assert entry["sha256"] == sha256_file(out / rel)
    entry = manifest["datasets/dapo-math-17k.parquet"]
    assert (entry["rows"], entry["rows_read"], entry["duplicates_removed"], entry["conflicting_answers"]) == (
        5,
        15,
        10,
        1,
    )
    assert entry["source"] == {"local": str((hub_copy / "dapo-math-17k.parquet").resolve())}


def test_the_paper_preset_reads_what_the_fetch_writes(hub_copy, tmp_path):
    """Curation's own reader and validation take the fetched training file with the preset's fields,
    and the preset's benchmark directory is where the fetch writes."""
    from sent.problems import read_rows

    out = tmp_path / "data"
    fetch(["dapo-math-17k"], out=out, from_dir=hub_copy)
    cfg = load_config(ROOT / "configs" / "paper" / "qwen2.5-math-7b.yaml")
    assert cfg.data.train_path == f"data/{SOURCES['dapo-math-17k'].filename}" == "data/datasets/dapo-math-17k.parquet"
    assert cfg.evaluation.data_dir == "data/benchmarks"
    fields = cfg.data.fields
    rows = [row for _, row, _ in read_rows(out / "datasets" / "dapo-math-17k.parquet")]
    assert [(r[fields.id], r[fields.problem], r[fields.answer]) for r in rows][1] == (
        "dapo-math-17k-000001",
        "Find 1 * 2.",
        "2",
    )


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared benchmarks are not on this machine ({SHARED})")
def test_the_shared_benchmarks_come_out_of_from_unchanged(tmp_path):
    out = tmp_path / "data"
    fetch(BENCHMARKS, out=out, from_dir=SHARED)
    for name in BENCHMARKS:
        before = load_benchmark(SHARED / f"{name}.jsonl")
        assert load_benchmark(out / "benchmarks" / f"{name}.jsonl") == before
        assert len(before) == SOURCES[name].rows


def test_a_fetch_adds_to_the_manifest_and_rewrites_only_its_files(hub_copy, tmp_path):
    out = tmp_path / "data"
    fetch(["aime24"], out=out, from_dir=hub_copy)
    first = json.loads((out / "manifest.json").read_text())["files"]["benchmarks/aime24.jsonl"]
    fetch(["minerva"], out=out, from_dir=hub_copy)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["benchmarks/aime24.jsonl"] == first
    assert set(files) == {"benchmarks/aime24.jsonl", "benchmarks/minerva.jsonl"}
    assert sorted(p.name for p in (out / "benchmarks").iterdir()) == ["aime24.jsonl", "minerva.jsonl"]  # no temporaries


def test_a_wrong_size_names_both_counts(tmp_path):
    save_to_disk(hub_rows("aime25", 29), tmp_path / "aime25", "test")
    with pytest.raises(SourceError, match=r"aime25 has 29 rows, but the benchmark has 30"):
        fetch(["aime25"], out=tmp_path / "out", from_dir=tmp_path)
    assert not (tmp_path / "out" / "benchmarks" / "aime25.jsonl").exists()


def test_a_missing_column_is_named_with_the_file(tmp_path):
    rows = [{"question": r["question"], "solution": "1"} for r in hub_rows("minerva", 272)]
    save_to_disk(rows, tmp_path / "minerva", "test")
    with pytest.raises(SourceError) as info:
        fetch(["minerva"], out=tmp_path / "out", from_dir=tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'minerva'}: column(s) 'answer' missing")


def test_a_bad_row_is_named_with_its_line_and_field(tmp_path):
    rows = hub_rows("amc23", 40)
    rows[6]["answer"] = ""
    (tmp_path / "amc23.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError, match=rf"^{tmp_path / 'amc23.jsonl'}:7: field 'answer' \(answer\) is empty$"):
        fetch(["amc23"], out=tmp_path / "out", from_dir=tmp_path)
    rows[6]["answer"] = None
    (tmp_path / "amc23.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError, match=r"amc23.jsonl:7: field 'answer' \(answer\): an answer cannot be None"):
        fetch(["amc23"], out=tmp_path / "out", from_dir=tmp_path)


def test_a_dapo_row_without_dapos_prompt_is_named(tmp_path):
    rows = [
        {"prompt": dapo_prompt("Find 1."), "reward_model": {"ground_truth": "1"}, "extra_info": {"index": "a"}},
        {
            "prompt": [{"role": "user", "content": "Find 2."}],
            "reward_model": {"ground_truth": "2"},
            "extra_info": {"index": "b"},
        },
    ]
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "dapo-math-17k.parquet"))
    with pytest.raises(
        SourceError, match=r"dapo-math-17k.parquet: row 2: field 'prompt.0.content' \(problem\): not DAPO's"
    ):
        fetch(["dapo-math-17k"], out=tmp_path / "out", from_dir=tmp_path)


def test_names_and_directories_are_checked_before_anything_is_read(tmp_path, capsys):
    assert main(["data", "fetch", "aime42", "--from", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown data set(s) aime42; known: dapo-math-17k, aime24" in capsys.readouterr().err
    with pytest.raises(SourceError, match="--revision is one repository's commit"):
        fetch(["aime24", "aime25"], out=tmp_path / "o", revision="abc123")
    with pytest.raises(SourceError, match="not a directory"):
        fetch(["aime24"], out=tmp_path / "o", from_dir=tmp_path / "nowhere")
    save_to_disk(hub_rows("aime24", 30), tmp_path / "aime24", "train")
    with pytest.raises(SourceError, match=r"^minerva: none of .*minerva.jsonl.* exists"):
        fetch(["aime24", "minerva"], out=tmp_path / "o", from_dir=tmp_path)
    assert not (tmp_path / "o").exists()  # aime24 was not written: minerva's copy was missing


def test_answer_text_and_unwrap():
    assert [answer_text(v) for v in (27.0, 2.5, 3, " 1/2 ", ["$1$", 2])] == ["27", "2.5", "3", "1/2", "$1$, 2"]
    for bad in (None, True, float("nan"), {"a": 1}):
        with pytest.raises(ValueError):
            answer_text(bad)
    assert unwrap_dapo(dapo_prompt("Line one.\n\nLine two.")[0]["content"]) == "Line one.\n\nLine two."
