"""Re-staging between stages (`sent.rescore`, ``curriculum.mode: rescored``): the pool and the merge
on a hand-made curriculum with known SEs, then the real thing on the tiny toy model."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from sent.curate import curate
from sent.curriculum import assign_stages
from sent.data_contract import load_curriculum, load_manifest
from sent.problems import CurationError
from sent.rescore import SAMPLED, merge_scores, moved, rescore, split_pool

from sent_testing import toy_config


def row(pid, index, stage, se, pass_rate=0.5, filtered=False):
    return {
        "index": index,
        "id": pid,
        "stage": stage,
        "filtered": filtered,
        "semantic_entropy": se,
        "weighted_semantic_entropy": se,
        "pass_rate": pass_rate,
    }


def test_the_pool_is_restaged_by_its_new_se_and_the_trained_stage_stays(tiny_toy):
    cfg = toy_config(tiny_toy, "curriculum.n_stages=3")
    # K = 3, stage 1 trained: a stays in stage 1, f stays filtered; b, c, d, e are the pool
    scores = [
        row("a", 0, 1, 0.0),
        row("b", 1, 2, 0.5),
        row("c", 2, 2, 0.6),
        row("d", 3, 3, 1.0),
        row("e", 4, 3, 1.2),
        row("f", 5, None, 0.0, pass_rate=1.0, filtered=True),
    ]
    kept, pool = split_pool(scores, 1)
    assert [r["id"] for r in kept] == ["a", "f"] and [r["id"] for r in pool] == ["b", "c", "d", "e"]
    # stage 1's model: new SE b 1.1, c 0.0, d 0.2, e 1.3. Quantile into the 2 stages left, by rank
    # r = 0..3 (c, d, b, e): 1 + floor(2 r / 4) gives c 1, d 1, b 2, e 2; shifted by 1: c, d -> 2, b, e -> 3
    new_se = {"b": 1.1, "c": 0.0, "d": 0.2, "e": 1.3}
    sub_stage = {"c": 1, "d": 1, "b": 2, "e": 2}
    order = ["b", "c", "d", "e"]
    assert list(assign_stages([new_se[i] for i in order], n_stages=2)) == [sub_stage[i] for i in order]
    # the pool's own curation numbers its problems from 0, in pool order
    rescored = [row(i, j, sub_stage[i], new_se[i], pass_rate=0.75) for j, i in enumerate(order)]
    merged = merge_scores(kept, pool, rescored, 1)
    assert [(r["id"], r["index"], r["stage"]) for r in merged] == [
        ("a", 0, 1),
        ("b", 1, 3),
        ("c", 2, 2),
        ("d", 3, 2),
        ("e", 4, 3),
        ("f", 5, None),
    ]
    assert merged[1]["semantic_entropy"] == 1.1 and merged[0] is scores[0]
    change = moved(pool, merged, cfg, 1)
    assert change["pool"] == 4 and change["changed_stage"] == 2 and change["filtered_now"] == 0  # b 2->3, d 3->2
    # stage 2 before: b, c (0.55); after: c, d (0.1). Stage 3 before: d, e (1.1); after: b, e (1.2)
    before = [(s["stage"], s["count"], round(s["se_mean"], 6)) for s in change["stages_before"]]
    after = [(s["stage"], s["count"], round(s["se_mean"], 6)) for s in change["stages_after"]]
    assert before == [(2, 2, 0.55), (3, 2, 1.1)] and after == [(2, 2, 0.1), (3, 2, 1.2)]
    assert change["mean_pass_rate_before"] == 0.5 and change["mean_pass_rate_after"] == 0.75
    # a problem the stage model answers all right or all wrong may be filtered now (drop_zero_signal)
    rescored[0] = {**rescored[0], "stage": None, "filtered": True}
    merged = merge_scores(kept, pool, rescored, 1)
    assert merged[1]["stage"] is None and moved(pool, merged, cfg, 1)["filtered_now"] == 1
    with pytest.raises(CurationError, match="lost problems"):
        merge_scores(kept, pool, rescored[1:], 1)


@pytest.fixture(scope="module")
def restaged(tiny_toy, tmp_path_factory):
    """A 3-stage curation of 36 toy problems, then stage 2 and 3 re-staged by a copy of the model
    (the machinery is under test, not the model: a trained stage would only change the numbers)."""
    cfg = toy_config(
        tiny_toy, "sampling.n=4", "sampling.chunk_size=12", "curriculum.n_stages=3", "curriculum.mode=rescored"
    )
    root = tmp_path_factory.mktemp("rescore")
    source = curate(cfg, out=root / "curate", limit=36)
    model = root / "stage-1-model"
    shutil.copytree(tiny_toy.model_dir, model)
    return cfg, source, model, rescore(cfg, source.out_dir, model, 1, root / "rescore-1")


def test_a_rescored_curriculum_keeps_stage_1_and_stages_the_rest_by_the_new_scores(restaged):
    _, source, model, result = restaged
    out, m = result.out_dir, result.manifest
    old = {r["id"]: r for r in pq.read_table(source.out_dir / "scores.parquet").to_pylist()}
    new = {r["id"]: r for r in pq.read_table(out / "scores.parquet").to_pylist()}
    assert set(new) == set(old) and len(new) == 36  # every problem, once
    stage1 = [i for i, r in old.items() if r["stage"] == 1]
    assert stage1 and all(new[i] == old[i] for i in stage1)  # trained: untouched
    pool = [i for i, r in old.items() if r["stage"] in (2, 3)]
    assert all(new[i]["stage"] in (2, 3) for i in pool)
    # the new scores are the pool curation's, which sampled every pool problem with the model
    sampled = {r["id"]: r for r in pq.read_table(out / SAMPLED / "scores.parquet").to_pylist()}
    assert set(sampled) == set(pool)
    assert all(new[i]["semantic_entropy"] == sampled[i]["semantic_entropy"] for i in pool)
    assert load_manifest(out / SAMPLED)["config"]["model"]["path"] == str(model)
    # stages 2 and 3 are ordered by the new SE: nothing in stage 2 above anything in stage 3
    se2 = [new[i]["semantic_entropy"] for i in pool if new[i]["stage"] == 2]
    se3 = [new[i]["semantic_entropy"] for i in pool if new[i]["stage"] == 3]
    assert se2 and se3 and max(se2) <= min(se3)
    change = m["rescored"]
    assert change["pool"] == len(pool) and change["after_stage"] == 1
    assert change["changed_stage"] == sum(new[i]["stage"] != old[i]["stage"] for i in pool)
    assert [s["count"] for s in change["stages_after"]] == [len(se2), len(se3)]
    assert np.isclose(change["stages_after"][0]["se_mean"], np.mean(se2))
    # the shards: training reads stage 2 from here, in the curriculum's schema, ordered by SE
    table = load_curriculum(out, 2)
    ids = [e["id"] for e in table.column("extra_info").to_pylist()]
    assert sorted(ids) == sorted(i for i in pool if new[i]["stage"] == 2)
    assert [new[i]["semantic_entropy"] for i in ids] == sorted(se2)
    assert load_curriculum(out, 1).num_rows == len(stage1)


def test_a_finished_rescore_is_reused_and_other_weights_are_refused(restaged, tmp_path):
    cfg, source, model, result = restaged
    again = rescore(cfg, source.out_dir, model, 1, result.out_dir)
    assert again.reused and again.manifest == result.manifest
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    with pytest.raises(CurationError, match="another configuration"):
        rescore(cfg, source.out_dir, other, 1, result.out_dir)
    with pytest.raises(CurationError, match=r"stages 1\.\.2 have a stage after them"):
        rescore(cfg, source.out_dir, model, 3, tmp_path / "x")
