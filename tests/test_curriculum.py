"""Stage assignment: known answers, ties never split by input order, degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sent.curriculum import assign_stages, stage_summary


def test_quantile_known_answer():
    # 6 distinct values, K = 2: ranks 0..5 -> stage 1 + floor(2 r / 6) = 1,1,1,2,2,2
    x = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.0])
    assert assign_stages(x, n_stages=2).tolist() == [2, 1, 2, 1, 2, 1]
    # K = 3: 1 + floor(3 r / 6) = 1,1,2,2,3,3 by rank
    assert assign_stages(x, n_stages=3).tolist() == [3, 1, 2, 2, 3, 1]


def test_ties_stay_together():
    # SE at N = 8 takes few values: 0 four times, then 0.69 and 1.0. K = 2, n = 6.
    # zeros: the lowest block -> stage 1 (mid-rank 1.5 -> 1 + floor(2 * 1.5 / 6) = 1 anyway);
    # 0.69: mid-rank 4 -> 1 + floor(8 / 6) = 2; 1.0: mid-rank 5 -> 2. The zeros are never split.
    x = np.array([0.0, 0.69, 0.0, 0.0, 1.0, 0.0])
    assert assign_stages(x).tolist() == [1, 2, 1, 1, 2, 1]


def test_a_large_top_block_does_not_empty_the_last_stage():
    # 25 distinct low values and 35 problems at ln 8 (all answers different), K = 2, n = 60.
    # By "values below" alone the top block would start at rank 25 < 30 and join stage 1,
    # leaving stage 2 empty; its mid-rank 25 + 17 = 42 puts it in stage 2.
    x = np.concatenate([np.linspace(0.0, 1.5, 25), np.full(35, np.log(8))])
    stages = assign_stages(x, n_stages=2)
    assert (stages[:25] == 1).all() and (stages[25:] == 2).all()


def test_all_equal_and_more_stages_than_problems():
    assert assign_stages(np.full(5, 0.3), n_stages=3).tolist() == [1] * 5
    # n = 2 < K = 5: ranks 0, 1 -> stages 1 and 1 + floor(5 / 2) = 3; stages 2, 4, 5 are empty
    assert assign_stages(np.array([0.2, 0.1]), n_stages=5).tolist() == [3, 1]
    assert assign_stages(np.array([]), n_stages=2).tolist() == []
    assert assign_stages(np.array([0.4]), n_stages=1).tolist() == [1]


def test_threshold_method():
    x = np.array([0.0, 0.5, 0.99, 1.0, 2.5])
    # x < 0.5 -> 1; 0.5 <= x < 1.0 -> 2; x >= 1.0 -> 3
    assert assign_stages(x, n_stages=3, method="threshold", thresholds=[0.5, 1.0]).tolist() == [1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_stages": 0}, "n_stages"),
        ({"method": "threshold", "n_stages": 3, "thresholds": [0.5]}, "needs 2 thresholds"),
        ({"method": "threshold", "n_stages": 3, "thresholds": [1.0, 0.5]}, "strictly increasing"),
        ({"method": "kmeans"}, "unknown method"),
        ({"thresholds": [0.5]}, "only used"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        assign_stages(np.array([0.1, 0.2]), **kwargs)


def test_non_finite_entropy_is_an_error_naming_the_position():
    with pytest.raises(ValueError, match="position 1"):
        assign_stages(np.array([0.1, np.nan, 0.3]))


values_st = st.lists(st.sampled_from([0.0, 0.37, 0.69, 1.04, 1.39, 2.08]), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(values_st, st.integers(1, 6), st.randoms(use_true_random=False))
def test_assignment_is_order_independent_and_monotone(values, k, rnd):
    x = np.array(values)
    stages = assign_stages(x, n_stages=k)
    perm = list(range(len(values)))
    rnd.shuffle(perm)
    permuted = assign_stages(x[perm], n_stages=k)
    assert permuted.tolist() == stages[perm].tolist()  # a function of the value, not the position
    for value in set(values):  # ties share a stage
        assert len(set(stages[x == value].tolist())) == 1
    order = np.argsort(x, kind="stable")  # low entropy first
    assert (np.diff(stages[order]) >= 0).all()
    assert stages.min() >= 1 and stages.max() <= k


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 3), min_size=1, max_size=200, unique=True), st.integers(1, 5))
def test_distinct_values_give_equal_count_stages(values, k):
    stages = assign_stages(np.array(values), n_stages=k)
    counts = np.bincount(stages, minlength=k + 1)[1:]
    n = len(values)
    # stage j holds the ranks r with floor(k r / n) = j - 1: ceil(n/k) or floor(n/k) of them
    assert counts.max() - counts.min() <= 1 or n < k


def test_stage_summary():
    x = np.array([0.0, 0.2, 1.0, 2.0])
    summary = stage_summary(x, assign_stages(x, n_stages=2), 2)
    assert [s["count"] for s in summary] == [2, 2]
    assert summary[0]["se_mean"] == pytest.approx(0.1)
    assert summary[1]["se_max"] == 2.0
