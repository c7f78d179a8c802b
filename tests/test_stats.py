"""Paired comparisons of two evaluations (`sent.stats`): known answers and scipy's paired t-test."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sent.evaluation import benchmark_levels
from sent.stats import (
    compare_evaluations,
    comparison_markdown,
    paired_difference,
    problem_scores,
)


def test_a_known_answer():
    # d = (50, 0, 0): mean 16.667; sd = sqrt((33.33^2 + 2 * 16.67^2) / 2) = 28.868;
    # se = 28.868 / sqrt(3) = 16.667; t(0.975, 2 dof) = 4.3027: half width 71.71
    r = paired_difference([0, 50, 100], [50, 50, 100])
    assert (r.problems, r.base, r.final) == (3, 50.0, pytest.approx(66.6667, abs=1e-4))
    assert r.difference == pytest.approx(16.6667, abs=1e-4)
    assert (r.ci_low, r.ci_high) == (pytest.approx(-55.04, abs=0.01), pytest.approx(88.38, abs=0.01))
    assert not r.excludes_zero


def test_a_constant_difference_has_no_width_and_excludes_zero():
    r = paired_difference([10, 20, 30, 40], [15, 25, 35, 45])
    assert (r.difference, r.ci_low, r.ci_high) == (5.0, 5.0, 5.0) and r.excludes_zero


def test_one_problem_has_no_interval_and_empty_input_is_refused():
    r = paired_difference([0.0], [100.0])
    assert r.difference == 100.0 and math.isnan(r.ci_low) and not r.excludes_zero
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1.0, 2.0], [1.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=2, max_size=40))
def test_the_interval_is_scipys_paired_t_test(pairs):
    from scipy import stats

    base, final = [a for a, _ in pairs], [b for _, b in pairs]
    r = paired_difference(base, final)
    if len({b - a for a, b in pairs}) == 1:
        return  # no spread: scipy's interval is NaN, ours has zero width (test above)
    ci = stats.ttest_rel(final, base).confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))


def test_groups_by_level_pools_the_trained_levels_and_ends_with_all(tmp_path):
    bench = tmp_path / "toy.jsonl"
    bench.write_text(
        "\n".join(
            f'{{"id": "p{i}", "problem": "x", "answer": "1", "level": {level}}}'
            for i, level in enumerate([1, 1, 2, 2, 3, 3])
        )
    )
    levels = {"toy": benchmark_levels(bench)}
    base = {("toy", f"p{i}"): v for i, v in enumerate([50, 60, 10, 20, 0, 0])}
    final = {("toy", f"p{i}"): v for i, v in enumerate([60, 70, 10, 30, 0, 0])}
    rows = compare_evaluations(base, final, levels=levels, trained={"toy L1", "toy L2"})
    by_group = {r.group: r for r in rows}
    assert [r.group for r in rows] == ["toy L1", "toy L2", "toy L3", "trained: toy L1, toy L2", "all"]
    assert by_group["toy L1"].difference == 10.0 and by_group["toy L3"].difference == 0.0
    assert by_group["trained: toy L1, toy L2"].problems == 4
    assert by_group["trained: toy L1, toy L2"].difference == pytest.approx(7.5)  # (10 + 10 + 0 + 10) / 4
    assert by_group["all"].difference == pytest.approx(5.0)  # 30 / 6
    assert "| toy L1 | 2 | 55.00 | 65.00 | +10.00 |" in comparison_markdown(rows)


def test_problem_scores_are_avg_at_n_in_points(tmp_path):
    details = tmp_path / "details.parquet"
    pl.DataFrame(
        {
            "benchmark": ["toy"] * 4 + ["amc23"] * 2,
            "id": ["a", "a", "a", "a", "b", "b"],
            "sample": [0, 1, 2, 3, 0, 1],
            "correct": [True, False, True, True, False, False],
        }
    ).write_parquet(details)
    assert problem_scores(details) == {("toy", "a"): 75.0, ("amc23", "b"): 0.0}


def test_evaluations_without_shared_problems_are_refused():
    with pytest.raises(ValueError, match="share no problem"):
        compare_evaluations({("toy", "a"): 1.0}, {("toy", "b"): 1.0})
