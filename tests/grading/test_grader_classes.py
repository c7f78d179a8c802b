"""The classes of misjudgement that outside graders exposed (issue 26), each fixed as a class:
the stated examples and cases of our own, right and wrong, through `compute_score` (extraction,
normal form, the tiers) as the reward sees them."""

from __future__ import annotations

import pytest

from sent.grading import compute_score, is_equivalent, normalize_answer


def _table(rows):
    return pytest.mark.parametrize(("response", "gold", "right"), rows, ids=[f"{r[0]} | {r[1]}" for r in rows])


# 1. The normal form stays a form the symbolic check parses: "\sin x" keeps its space
NORMAL_FORM = [
    ("\\boxed{\\tan x}", "\\frac{\\sin x}{\\cos x}", True),
    ("\\boxed{\\sqrt{3}\\pi}", "\\pi\\sqrt3", True),
    ("\\boxed{\\ln x}", "\\ln(x)", True),
    ("\\boxed{\\cos x - \\sin x}", "-\\sin x + \\cos x", True),
    ("\\boxed{\\sin 2x}", "2\\sin x\\cos x", True),
    ("\\boxed{\\cos^2 x - \\sin^2 x}", "\\cos 2x", True),  # ours: another identity
    ("\\boxed{\\pi r^2}", "r^2\\pi", True),
    ("\\boxed{2\\pi r}", "\\pi r^2", False),
    ("\\boxed{\\sin x}", "\\cos x", False),
    ("\\boxed{\\tan x}", "\\frac{\\cos x}{\\sin x}", False),
    # chained inequalities and one-sided ones against intervals
    ("\\boxed{1 < x \\le 3}", "(1, 3]", True),
    ("\\boxed{(1,3]}", "1<x\\leq 3", True),
    ("\\boxed{-2 \\leq x < 5}", "[-2, 5)", True),
    ("\\boxed{x > 2}", "(2, \\infty)", True),
    ("\\boxed{x \\le -1}", "(-\\infty, -1]", True),
    ("\\boxed{5 > x > 1}", "(1, 5)", True),
    ("\\boxed{1 < x \\le 3}", "(1, 3)", False),
    ("\\boxed{1 \\le x \\le 3}", "(1, 3]", False),
    ("\\boxed{x > 2}", "[2, \\infty)", False),
]

# 2. A hedge is boxes of different values, not different spellings of one value
HEDGES = [
    ("\\boxed{2\\frac14}, or \\boxed{\\frac94}", "\\frac94", True),
    ("\\boxed{\\frac34} or \\boxed{0.75}", "\\frac{3}{4}", True),
    ("\\boxed{\\frac{1}{2}} or equivalently \\boxed{0.5}", "0.5", True),  # prose between: the last box
    ("\\boxed{\\sqrt{8}} or \\boxed{2\\sqrt{2}}", "2\\sqrt2", True),
    ("\\boxed{2\\frac14}, or \\boxed{\\frac95}", "\\frac94", False),
    ("\\boxed{0.75} or \\boxed{0.8}", "0.8", False),
]

# 3. The percent sign is dropped only when both sides mean the same number
PERCENT = [
    ("\\boxed{0.5\\%}", "\\frac12", False),
    ("\\boxed{\\frac12}", "0.5\\%", False),
    ("\\boxed{25}", "25\\%", True),
    ("\\boxed{25\\%}", "25", True),
    ("\\boxed{25\\%}", "0.25", True),
    ("\\boxed{0.25}", "25\\%", True),
    ("\\boxed{50\\%}", "\\frac{1}{2}", True),
    ("\\boxed{12.5\\%}", "12.5\\%", True),
    ("\\boxed{12.5\\%}", "\\frac18", True),
    ("\\boxed{12.5}", "\\frac18", False),
    ("\\boxed{30\\%}", "0.3\\%", False),
    ("\\boxed{3\\%}", "0.3", False),
]

# 4. A list answered in several boxes, when the reference is a list; one value stays one value
LISTS = [
    ("\\boxed{2} and \\boxed{-3}", "2, -3", True),
    ("\\boxed{1}, \\boxed{4}, \\boxed{9}", "1, 4, 9", True),
    ("$x = \\boxed{-3}$ or $x = \\boxed{2}$", "2, -3", True),
    ("\\boxed{\\frac12}, \\boxed{3}", "3, \\frac{1}{2}", True),
    ("\\boxed{2} and \\boxed{-3}", "2", False),
    ("\\boxed{2} and \\boxed{-3}", "-3", False),
    ("\\boxed{1}, \\boxed{4}, \\boxed{8}", "1, 4, 9", False),
    ("\\boxed{1}, \\boxed{4}", "1, 4, 9", False),
    ("\\boxed{1}, \\boxed{4}, \\boxed{9}, \\boxed{16}", "1, 4, 9", False),
]

# 5. A labelled answer is its value; an equation that constrains is not a bare side
LABELLED = [
    ("\\boxed{g(2)=5}", "5", True),
    ("\\boxed{|PQ|=4}", "4", True),
    ("\\boxed{P:Q=2:5}", "2:5", True),
    ("\\boxed{S_{ABC}:S_{ABD}=3:8}", "3:8", True),
    ("\\boxed{\\frac{AM}{MB}=\\frac{2}{\\sqrt5}}", "\\frac{2}{\\sqrt5}", True),
    ("\\boxed{y = x^2-4x+4}", "4-4x+x^2", True),
    ("\\boxed{AB = 7}", "7", True),
    ("\\boxed{f(x) = 3x+1}", "1+3x", True),
    ("\\boxed{\\angle ABC = 45^\\circ}", "45", True),
    ("\\boxed{g(2)=6}", "5", False),
    ("\\boxed{y = x^2-4x+5}", "4-4x+x^2", False),
    ("\\boxed{a+3z=0}", "0", False),
    ("\\boxed{7=11a+c}", "11a+c", False),
    ("\\boxed{x(x)=0}", "0", False),
    ("\\boxed{x=3, y=4}", "3", False),
]

# 6. Smaller gaps: typefaces, lower-case option letters, "x = 2 or x = 5"
SMALLER = [
    ("\\boxed{\\mathbf{C}}", "C", True),
    ("\\boxed{\\mathcal{C}}", "C", True),
    ("\\boxed{\\boldsymbol{v}}", "v", True),
    ("\\boxed{\\mathbb{R}}", "R", False),  # the reals are not a letter
    ("\\boxed{b}", "\\text{(B)}", True),
    ("\\boxed{(d)}", "D", True),
    ("\\boxed{b}", "\\text{(C)}", False),
    ("\\boxed{x = 2 \\text{ or } x = 5}", "2, 5", True),
    ("\\boxed{x = 5 \\text{ or } x = 2}", "2, 5", True),
    ("\\boxed{2 \\text{ and } 5}", "2, 5", True),
    ("\\boxed{x = 2 \\text{ or } x = 6}", "2, 5", False),
    ("\\boxed{x = 2 \\text{ or } y = 5}", "2, 5", False),
]


@_table(NORMAL_FORM)
def test_normal_forms_stay_parseable(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


@_table(HEDGES)
def test_hedges_are_different_values(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


@_table(PERCENT)
def test_percent_signs(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


@_table(LISTS)
def test_lists_in_several_boxes(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


@_table(LABELLED)
def test_labelled_answers(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


@_table(SMALLER)
def test_smaller_gaps(response, gold, right):
    assert compute_score("math", response, gold)["acc"] is right


def test_the_normal_form_keeps_the_space_that_ends_a_command():
    assert normalize_answer("\\sin   x") == "\\sin x"
    assert normalize_answer("\\pi r ^ 2") == "\\pi r^2"
    assert normalize_answer("2 \\cdot 3") == "2\\cdot3"  # a space before a digit ends nothing
    assert normalize_answer("x = 2 \\text{ or } x = 5") == "2,5"


def test_the_percent_rule_is_symmetric():
    for response, gold, _ in PERCENT:
        answer = response.removeprefix("\\boxed{").removesuffix("}")
        assert is_equivalent(answer, gold) == is_equivalent(gold, answer)
