"""Online semantic entropy (`sent.online_se`, ``curriculum.mode: online``): the SE of known rollouts,
and the epoch order on hand-made SEs worked out in comments."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sent.config import SemanticConfig
from sent.online_se import GroupScore, OnlineOrder, score_group
from sent.rewards import extract_answer
from sent.semantic import configured_judge, score_answers

from sent_testing import toy_config


def test_online_se_of_known_rollouts_is_curations_se_of_the_same_answers():
    semantic = SemanticConfig()
    texts = [
        "2 + 2 = 4, so \\boxed{4}",
        "\\boxed{4.0}",  # the maths judge puts 4.0 with 4
        "\\boxed{5}",
        "I cannot tell.",  # no answer: a class of its own (pool_missing off)
    ]
    # classes {4, 4.0}, {5}, {none}: p = 1/2, 1/4, 1/4
    # SE = -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1/2 ln 2 + ln 2 = 1.5 ln 2
    got = score_group(texts, [1.0, 1.0, 0.0, 0.0], configured_judge(semantic), semantic)
    assert got.semantic_entropy == pytest.approx(1.5 * math.log(2))
    assert (got.n_classes, got.pass_rate, got.undecided) == (3, 0.5, 0)
    # and it is, to the bit, what curation's function gives on the same answers
    same = score_answers(
        [extract_answer(t) for t in texts],
        equivalent=configured_judge(semantic),
        pool_missing=semantic.pool_missing,
        budget_s=semantic.problem_budget_s,
    )
    assert (got.semantic_entropy, got.n_classes) == (same.entropy, same.n_classes)
    # pooled missing answers: {4, 4.0}, {5}, {none}: the same here; two blanks would differ
    pooled = SemanticConfig(pool_missing=True)
    two_blank = ["\\boxed{4}", "no idea", "none", "\\boxed{4}"]
    assert score_group(two_blank, [1, 0, 0, 1], configured_judge(pooled), pooled).n_classes == 2
    assert score_group(two_blank, [1, 0, 0, 1], configured_judge(semantic), semantic).n_classes == 3


def order(offline, *, batch_size=2, shuffle=False, filter_zero=False, seed=0):
    ids = [f"p{i}" for i in range(len(offline))]
    return OnlineOrder(offline, ids, batch_size=batch_size, seed=seed, shuffle=shuffle, filter_zero=filter_zero)


def score(se):
    return GroupScore(se, 1 if se == 0 else 2, 0.5, 0)


def test_the_first_epoch_is_static_and_later_ones_follow_the_latest_se():
    # 5 rows, batches of 2, no shuffle: epoch 1 is rows 0..4 as they are
    o = order([0.9, 0.1, 0.5, 0.3, 0.7])
    assert o.batch(0) == [(0, 1), (1, 1)]
    o.record(1, o.batch(0), [score(0.8), score(0.0)])
    assert o.batch(1) == [(2, 1), (3, 1)]
    o.record(2, o.batch(1), [score(0.2), score(1.1)])
    # step 3 reaches into epoch 2, decided now. Latest SE: row 0 0.8, 1 0.0, 2 0.2, 3 1.1 (online),
    # row 4 0.7 (offline: not seen yet, it is in this very batch). Low first: 1, 2, 4, 0, 3
    assert o.batch(2) == [(4, 1), (1, 2)]
    assert o.order == [0, 1, 2, 3, 4, 1, 2, 4, 0, 3]
    assert o.epoch_starts == [0, 5]
    metrics = o.record(3, o.batch(2), [score(0.0), score(0.4)])
    # this step: SEs 0.0 and 0.4; seen so far: 0 0.8, 1 0.4, 2 0.2, 3 1.1, 4 0.0 -> one of five is 0
    assert metrics == {
        "online_se_mean": pytest.approx(0.2),
        "online_se_std": pytest.approx(0.2),
        "online_se_zero": 0.5,
        "online_se_zero_seen": 0.2,
        "online_se_seen": 1.0,
        "epoch": 2.0,
    }
    assert [(h["step"], h["row"], h["epoch"]) for h in o.history][-2:] == [(3, 4, 1), (3, 1, 2)]
    assert o.history[-1]["offline_semantic_entropy"] == 0.1


def test_ties_keep_the_static_order_of_the_epoch():
    # shuffled: epoch 2's static order is the seed's second permutation; every SE equal, so it is that
    o = order([0.5] * 6, batch_size=3, shuffle=True, seed=7)
    rng = np.random.default_rng(7)
    first, second = rng.permutation(6).tolist(), rng.permutation(6).tolist()
    assert [r for r, _ in o.batch(0) + o.batch(1)] == first
    assert [r for r, _ in o.batch(2) + o.batch(3)] == second


def test_the_filter_leaves_a_zero_se_row_out_for_one_epoch_then_measures_it_again():
    o = order([0.0, 0.4, 0.2, 0.6], batch_size=2, filter_zero=True)
    o.record(1, o.batch(0), [score(0.0), score(0.3)])  # rows 0 and 1
    o.record(2, o.batch(1), [score(0.0), score(0.5)])  # rows 2 and 3
    # latest: 0 0.0, 1 0.3, 2 0.0, 3 0.5 -> epoch 2 leaves rows 0 and 2 out
    assert o.batch(2) == [(1, 2), (3, 2)]
    o.record(3, o.batch(2), [score(0.0), score(0.0)])
    # every latest SE is 0 now. Rows 0 and 2 sat epoch 2 out, so epoch 3 measures them again; rows 1
    # and 3, just measured at 0, sit epoch 3 out. A left-out row is never stuck out.
    assert o.batch(3) == [(0, 3), (2, 3)]
    o.record(4, o.batch(3), [score(0.7), score(0.0)])
    # epoch 4, by latest SE: 1 (0), 2 (0), 3 (0), 0 (0.7); rows 1 and 3 are due, row 2 sits out
    assert o.batch(4) == [(1, 4), (3, 4)] and o.order[8:] == [1, 3, 0]
    # an epoch keeps at least one batch: with one row of signal left, the first zero joins it
    thin = order([0.5, 0.5, 0.5, 0.5], batch_size=2, filter_zero=True)
    thin.record(1, thin.batch(0), [score(0.0), score(0.0)])
    thin.record(2, thin.batch(1), [score(0.0), score(0.4)])
    assert thin.batch(2) == [(0, 2), (3, 2)] and thin.order[4:] == [0, 3]
    # a row never seen keeps its offline SE, and an offline 0 is left out as well
    fresh = order([0.0, 0.4, 0.2], batch_size=2, filter_zero=True)
    fresh.record(1, fresh.batch(0), [score(0.5), score(0.6)])  # rows 0, 1; row 2 unseen: 0.2
    assert [r for r, _ in fresh.batch(1)] == [2, 2]  # epoch 1's last row, then epoch 2's first
    assert fresh.order[3:] == [2, 0, 1]


def test_the_filter_never_shrinks_the_stage_to_a_few_rows():
    """What the first filter did in the collapse preset: rows measured at 0 were never measured
    again, and the stage ended on one problem. With one row of signal and the rest at 0 after each
    rollout, an epoch still holds at least a batch, and every row is trained at least every other
    epoch."""
    o = order([0.5] * 8, batch_size=2, filter_zero=True)
    seen_at: dict[int, list[int]] = {}
    for step in range(40):
        batch = o.batch(step)
        for row, epoch in batch:
            seen_at.setdefault(row, []).append(epoch)
        o.record(step + 1, batch, [score(0.5 if row == 7 else 0.0) for row, _ in batch])
    last = max(e for epochs in seen_at.values() for e in epochs)
    assert len(seen_at) == 8 and all(np.diff(o.epoch_starts) >= 2)  # every epoch at least a batch
    for row, epochs in seen_at.items():  # never two epochs in a row without it
        e = sorted(set(epochs))
        assert all(b - a <= 2 for a, b in itertools.pairwise(e)) and e[-1] >= last - 1, (row, e)


def test_a_restored_order_goes_on_as_the_uninterrupted_one():
    def run(steps, resume_at=None):
        o = order([0.3, 0.1, 0.9, 0.5, 0.7, 0.2], batch_size=4, shuffle=True, seed=3)
        for step in range(steps):
            if step == resume_at:
                state, table = o.state(), o.history_table()
                o = order([0.3, 0.1, 0.9, 0.5, 0.7, 0.2], batch_size=4, shuffle=True, seed=3)
                o.restore(state, table)
            batch = o.batch(step)
            o.record(step + 1, batch, [score(((step * 7 + r) % 5) / 5) for r, _ in batch])
        return o

    clean, resumed = run(7), run(7, resume_at=4)
    assert resumed.order == clean.order and resumed.history == clean.history


def test_online_settings_are_checked_and_keyed(tiny_toy):
    with pytest.raises(ValueError, match="online_filter filters by the online SE of mode 'online'"):
        toy_config(tiny_toy, "curriculum.online_filter=true")
    assert toy_config(tiny_toy, "curriculum.mode=online", "training.engine=verl").curriculum.mode == "online"
    static, online = toy_config(tiny_toy), toy_config(tiny_toy, "curriculum.mode=online")
    # the curation is the same in every mode; training is not
    assert static.section_digest("curriculum") == online.section_digest("curriculum")
    assert static.online_order() is None
    assert online.online_order() == {"mode": "online", "online_filter": False}
