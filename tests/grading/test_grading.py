"""Answer extraction and equivalence: a hand-made table, symmetry, robustness, and the accuracy
bars on real reference solutions (MATH500 >= 98 %, GSM8K test >= 99 %)."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sent.rewards import compute_score, extract_answer, grade, is_equivalent, normalize_answer

from sent_testing import read_jsonl

# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------

EXTRACTION = [
    ("so the answer is \\boxed{42}.", "42"),
    ("first \\boxed{1} then \\boxed{2}", "2"),  # the last box wins
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("\\boxed {x+1}", "x+1"),  # space before the brace
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("\\fbox{7}", "7"),
    ("$\\boxed 5$", "5"),  # no braces at all
    ("\\boxed{3} and a truncated \\boxed{\\frac{1}{", "3"),  # unclosed last box is skipped
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the group
    ("Final Answer: The final answer is $3$. I hope it is correct.", "3"),  # Minerva format
    ("The final answer is 2.5. Done", "2.5"),  # a decimal point is not a sentence end
    ("Reasoning...\nAnswer: 17", "17"),
    ("**Answer:** 42", "42"),
    ("Janet makes 9 * 2 = 18.\n#### 18", "18"),  # GSM8K
    ("Step 1. The answer is $\\frac12$.", "\\frac12"),
    ("no final answer here", None),
    ("", None),
    ("\\boxed{}", None),  # an empty box is no answer
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTION)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_non_string_is_none():
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(12) is None  # type: ignore[arg-type]


def test_extract_answer_ten_thousand_nested_braces_is_fast():
    text = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    t0 = time.perf_counter()
    assert extract_answer(text) == "{" * 10_000 + "1" + "}" * 10_000
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------------------------------------
# equivalence table: (a, b, expected); each pair is checked in both orders
# ---------------------------------------------------------------------------------------------

EQUIVALENCE = [
    # numbers, fractions, decimals
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac{2}{4}", "0.5", True),
    ("\\tfrac12", "1/2", True),
    ("-\\frac{3}{4}", "-0.75", True),
    ("3", "3.0", True),
    ("3", "03", True),
    ("1/3", "0.333", False),
    ("2", "3", False),
    ("-2", "2", False),
    ("1e3", "1000", True),
    # thousands separators
    ("1,000", "1000", True),
    ("10{,}080", "10080", True),
    ("1\\,000", "1000", True),
    ("1,000", "100", False),
    # roots, pi, symbolic forms
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", True),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("288 \\pi", "288\\pi", True),
    ("\\pi", "3.14", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("6 - 5i", "-5i+6", True),
    ("p - q", "q - p", False),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    # tuples, intervals, sets
    ("(1, 2)", "(1,2)", True),
    ("(1,2)", "(2,1)", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
    ("[0, 1)", "[0,1)", True),
    ("[0,1]", "(0,1)", False),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("(-\\sqrt{3}, \\sqrt{3})", "(-\\sqrt{3},\\sqrt{3})", True),
    # equations and inequalities: "x = <constant>" states a value, and so does any "name = value"
    # (a labelled answer: "y = 2x+1" answers "2x+1", as a person reads it); an equation that
    # constrains is only ever equal to a relation (found by a peer suite where our normal form was wrong)
    ("x = 3", "3", True),
    ("3 = x", "x = 3", True),
    ("y = 2x+1", "2x+1", True),
    ("y = 2x+1", "2x+2", False),
    ("y=\\frac{1}{2}", "0.5", True),
    ("x = 3", "4", False),
    ("x \\leq 5", "5 \\geq x", True),
    ("x \\geq 5", "5 \\leq x", True),
    ("x \\geq 5", "x \\leq 5", False),
    ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", True),  # one line, two spellings
    ("2x+4y-3=0", "-\\frac{1}{2}x+\\frac{3}{4}", False),  # a line is not its right side
    ("x+y=1", "2x+2y=2", True),
    ("x<3", "3>x", True),
    ("x<3", "x \\le 3", False),
    ("x>3", "(3,\\infty)", True),  # an inequality can be an interval (math-verify decides)
    # mixed numbers and the imaginary unit
    ("\\frac{7}{2}", "3\\frac{1}{2}", True),
    ("-3\\frac{1}{2}", "-3.5", True),
    ("i", "\\sqrt{-1}", True),
    # units, degrees, percent, currency
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90", True),
    ("5\\text{ cm}", "5", True),
    ("12 \\mbox{ inches}", "12", True),
    ("10\\%", "10", True),
    ("\\$18", "18", True),
    ("18 dollars", "18", True),
    ("45^\\circ", "90", False),
    # choices and text
    ("\\text{(B)}", "B", True),
    ("(C)", "C", True),
    ("B", "C", False),
    ("\\text{Monday}", "monday", True),
    ("even", "odd", False),
    ("\\text{Evelyn}", "Evelyn", True),
    # missing and empty
    ("", "", False),
    ("   ", "3", False),
]


@pytest.mark.parametrize(("a", "b", "expected"), EQUIVALENCE)
def test_equivalence_table(a, b, expected):
    assert is_equivalent(a, b) is expected
    assert is_equivalent(b, a) is expected  # symmetric


def test_table_is_large_and_mixed():
    assert len(EQUIVALENCE) >= 40
    assert sum(not e for *_, e in EQUIVALENCE) >= 12


def test_none_is_equivalent_to_nothing():
    assert not is_equivalent(None, "3")
    assert not is_equivalent("3", None)
    assert not is_equivalent(None, None)


def test_normal_form_keeps_command_boundaries():
    # removing spaces must not fuse "\pi r" into the undefined command "\pir"
    assert normalize_answer("\\pi r^2") != normalize_answer("\\pir^2")
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"


# ---------------------------------------------------------------------------------------------
# robustness: never raise, never hang, any thread
# ---------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_is_equivalent_never_raises_and_is_symmetric(a, b):
    # Random text mostly lands in the fast tiers; what reaches sympy is bounded by the timeout.
    r1 = is_equivalent(a, b, timeout=2.0)
    r2 = is_equivalent(b, a, timeout=2.0)
    assert isinstance(r1, bool)
    assert r1 == r2


@pytest.mark.slow
def test_power_tower_is_bounded():
    # sympy would try to evaluate 9^(9^(9^9)); the child process is killed at the deadline.
    t0 = time.perf_counter()
    assert is_equivalent("9^{9^{9^{9}}}", "9", timeout=1.0) is False
    assert time.perf_counter() - t0 < 4.0
    # the pool recovers: the next symbolic call works
    assert is_equivalent("\\sqrt{8}", "2\\sqrt{2}")


def test_deep_nesting_is_bounded():
    deep = "{" * 10_000 + "1" + "}" * 10_000
    t0 = time.perf_counter()
    assert is_equivalent(deep, "2") is False
    assert time.perf_counter() - t0 < 1.0


def test_works_off_the_main_thread():
    # math-verify's own signal-based timeout raises off the main thread; ours must not.
    pairs = [("\\sqrt{12}", "2\\sqrt{3}", True), ("(x+2)^2", "x^2+4x+4", True), ("\\sqrt{5}", "5", False)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: is_equivalent(p[0], p[1]), pairs * 4))
    assert results == [p[2] for p in pairs] * 4
    assert threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------
# grade / compute_score
# ---------------------------------------------------------------------------------------------


def test_grade_and_compute_score():
    assert grade("... so $\\boxed{\\dfrac{1}{2}}$", "0.5")
    assert not grade("... so $\\boxed{2}$", "0.5")
    assert not grade("I don't know", "0.5")
    assert grade("\\boxed{4}", ["3", "4"])  # any of several references
    decided = {"undecided": False}
    assert compute_score("math", "\\boxed{4}", "4") == {"score": 1.0, "acc": True, "pred": "4", **decided}
    assert compute_score("math", "\\boxed{5}", "4") == {"score": -1.0, "acc": False, "pred": "5", **decided}
    assert compute_score("math", "nothing", "4") == {"score": -1.0, "acc": False, "pred": None, **decided}
    zero_one = compute_score("math", "\\boxed{5}", "4", None, correct_score=1.0, incorrect_score=0.0)
    assert zero_one["score"] == 0.0


def test_ground_truth_given_as_boxed_solution():
    assert grade("\\boxed{7}", "the result is \\boxed{7}")


def _accuracy(rows, answer_of=lambda r: r["answer"]):
    return sum(grade(r["solution"], answer_of(r)) for r in rows) / len(rows)


def test_math500_reference_solutions_grade_correct(shared_data):
    rows = read_jsonl(shared_data / "train" / "math500_solutions.jsonl")
    acc = _accuracy(rows)
    print(f"MATH500 reference solutions graded correct: {acc:.4f}")
    assert acc >= 0.98
    # control: the same solutions against shuffled answers must mostly fail
    rng = random.Random(0)
    answers = [r["answer"] for r in rows]
    rng.shuffle(answers)
    wrong = sum(grade(r["solution"], a) for r, a in zip(rows, answers, strict=True)) / len(rows)
    assert wrong < 0.15


def test_gsm8k_test_solutions_grade_correct(shared_data):
    rows = read_jsonl(shared_data / "train" / "gsm8k_test.jsonl")
    acc = _accuracy(rows)
    print(f"GSM8K test solutions graded correct: {acc:.4f}")
    assert acc >= 0.99
    rng = random.Random(0)
    answers = [r["answer"] for r in rows]
    rng.shuffle(answers)
    wrong = sum(grade(r["solution"], a) for r, a in zip(rows, answers, strict=True)) / len(rows)
    assert wrong < 0.1


# ---------------------------------------------------------------------------------------------
# the in-process tiers decide without math-verify
# ---------------------------------------------------------------------------------------------

IN_PROCESS = [
    ("\\sqrt{8}", "2\\sqrt{2}", True),  # constants by value
    ("176", "352\\pi", False),
    ("\\sqrt{307328}", "392\\sqrt{2}", True),
    ("2^{10}", "1024", True),
    ("\\sqrt[3]{27}", "3", True),
    ("\\frac12", "0.5", True),  # one-digit bare arguments
    ("2x+5", "5+2x", True),  # expressions by value at fixed points
    ("5x+8", "8x+5", False),
    ("x^2-1", "(x-1)(x+1)", True),
    ("2(x+1)", "2x+2", True),
    ("\\frac{x^2-1}{x-1}", "x+1", True),
    ("\\alpha+1", "1+\\alpha", True),
    ("(2,\\frac12)", "(2,0.5)", True),  # tuples item by item
    ("(8,13)", "[8,13)", False),  # different brackets
    ("(1,2,3)", "(1,2)", False),  # different lengths
    ("(9,16)", "7x+9", False),  # a tuple is never a scalar
]


@pytest.mark.parametrize(("a", "b", "expected"), IN_PROCESS)
def test_in_process_tiers_decide_without_the_worker(a, b, expected, monkeypatch):
    import sent.grading.scoring as scoring

    def no_worker(*_):
        raise AssertionError("reached the math-verify worker")

    monkeypatch.setattr(scoring, "_symbolic_equivalent", no_worker)  # where the tiers look it up
    assert is_equivalent(a, b) is expected
    assert is_equivalent(b, a) is expected


def test_power_tower_is_not_evaluated_in_process():
    from sent.grading.expr import _value_at

    t0 = time.perf_counter()
    assert _value_at("9^{9^{9^{9}}}", 0, frozenset()) is None  # float overflow, at once
    assert time.perf_counter() - t0 < 0.1


def test_imaginary_unit_is_not_probed_as_a_real_variable():
    from sent.grading.expr import _compare_by_value

    assert _compare_by_value("i^2", "-1") is None  # left to math-verify


def test_probes_include_a_negative_point():
    # sqrt(x^2) is |x|, not x: a probe at negative x tells them apart
    assert not is_equivalent("\\sqrt{x^2}", "x")


@pytest.mark.slow
def test_agrees_with_math_verify_on_real_answer_pairs(shared_data):
    """Our tiers (normal form, exact rationals, tuples, evaluation) against math-verify's own
    symmetric verdict, on pairs of MATH500 reference answers: random pairs (mostly different)
    and valid respellings of the same answer (\\dfrac, spaces after commas, $...$)."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    answers = [r["answer"] for r in read_jsonl(shared_data / "train" / "math500_solutions.jsonl")]
    rng = random.Random(1)
    pairs = [(rng.choice(answers), rng.choice(answers)) for _ in range(400)]
    pairs += [(a, a.replace("\\frac", "\\dfrac").replace(",", ", ")) for a in answers[:250]]
    pairs += [(a, f"${a}$") for a in answers[250:]]

    def reference(a, b):
        pa, pb = parse(f"${a}$", parsing_timeout=None), parse(f"${b}$", parsing_timeout=None)
        if not pa or not pb:
            return None
        return bool(verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None))

    compared, disagreements = 0, []
    for a, b in pairs:
        ref = reference(a, b)
        if ref is None:
            continue
        compared += 1
        if is_equivalent(a, b) != ref:
            disagreements.append((a, b, ref))
    assert compared > 800
    assert len(disagreements) <= compared // 200, disagreements  # at most 0.5 %


# ---------------------------------------------------------------------------------------------
# reward hacking: answers a policy could emit to match a gold it does not know; each must be wrong
# ---------------------------------------------------------------------------------------------

HACKS = [
    # (response, gold, why it must not score)
    ("\\boxed{a+3z=0}", "0", "math-verify compares one side of an equation with a number"),
    ("\\boxed{2x+z=1}", "1", "the right side of an equation in variables"),
    ("\\boxed{7=11a+c}", "11a+c", "the other side of an equation in variables"),
    ("\\boxed{0=0}", "0", "a tautology"),
    ("\\boxed{x=x}", "3", "a tautology"),
    ("\\boxed{x = 11 + y}", "11", "an equation in variables"),
    ("\\boxed{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}", "7", "every small integer as a list"),
    ("\\boxed{\\{1, 2, 3, 4, 5, 6, 7, 8, 9, 10\\}}", "7", "every small integer as a set"),
    ("\\boxed{1}\\boxed{2}\\boxed{3}\\boxed{4}\\boxed{5}", "5", "a box per candidate (the last one included)"),
    ("\\boxed{4}, \\boxed{5} or \\boxed{6}", "6", "a hedged final answer"),
    ("$\\boxed{6}$ \\text{ or } $\\boxed{7}$", "7", "a hedged final answer"),
    ("\\boxed{11 \\text{ or } 12}", "11", "the gold inside a longer answer"),
    ("\\boxed{110}", "11", "the gold's digits inside a longer number"),
    ("\\boxed{11+1}", "11", "the gold inside a longer expression"),
    ("\\boxed{3 \\pm 1}", "3", "the gold with a hedge"),
    ("\\boxed{x=3, y=4}", "3", "the gold as one part of a system"),
    ("\\boxed{\\frac{7}{2}x}", "\\frac{7}{2}", "the gold times a free variable"),
    ("The final answer is final answer is 5 or 6", "6", "nested final-answer phrases"),
]


@pytest.mark.parametrize(("response", "gold", "why"), HACKS, ids=[h[2] for h in HACKS])
def test_reward_hacking_answers_score_as_wrong(response, gold, why):
    result = compute_score("math", response, gold)
    assert result["acc"] is False, why
    assert result["score"] == -1.0


def test_repeated_box_of_one_answer_still_counts():
    # the hedge rule is about different answers: repeating one answer is no hedge
    assert grade("so \\boxed{5}, i.e. \\boxed{5.0}", "5")
    assert grade("we try \\boxed{4}. Checking again, the answer is \\boxed{5}", "5")  # prose between


# ---------------------------------------------------------------------------------------------
# the time bound covers the whole call
# ---------------------------------------------------------------------------------------------


def test_extraction_is_linear_on_repeated_unclosed_boxes():
    # quadratic before: 54 s at 10,000 repeats (70 KB); now one pass over the braces
    for repeats in (10_000, 40_000):
        text = "\\boxed{" * repeats + " 5"
        t0 = time.perf_counter()
        assert extract_answer(text) is None
        assert time.perf_counter() - t0 < 1.0


def test_extraction_reads_only_the_tail_of_a_runaway_response():
    from sent.rewards import MAX_RESPONSE_CHARS

    assert extract_answer("\\boxed{1}" + "x" * MAX_RESPONSE_CHARS + "\\boxed{2}") == "2"
    assert extract_answer("\\boxed{1}" + "x" * MAX_RESPONSE_CHARS) is None  # the head is not read


@pytest.mark.slow
def test_power_tower_bound_includes_the_worker_restart():
    from sent.rewards import equivalence

    tower = "10^{10^{10^{10^{10}}}}"
    for _ in range(2):  # the second call meets the worker killed by the first one
        t0 = time.perf_counter()
        assert equivalence(tower, "1", timeout=1.0) is None  # undecided, not "False after 6 s"
        assert time.perf_counter() - t0 < 1.5


@pytest.mark.slow
def test_compute_score_budget_covers_every_reference():
    towers = [f"{b}^{{{b}^{{{b}^{{{b}}}}}}}" for b in (7, 8, 9)]
    t0 = time.perf_counter()
    result = compute_score("math", "\\boxed{2^{2^{2^{2^{2^{2}}}}}}", towers, timeout=1.0)
    assert time.perf_counter() - t0 < 1.5  # one budget for all three references, not three
    assert result["acc"] is False
    assert result["undecided"] is True


def test_the_verifier_pool_takes_its_size_from_the_config(tmp_path):
    """`semantic.verify_workers` sizes the pool where we start the work (warm_up_verifier) and
    reaches verl's reward workers through the job's environment; it is not in any cache key."""
    from sent.config_loading import load_config
    from sent.engines.verl import plan_stage
    from sent.grading import verify

    try:
        verify.warm_up_verifier(workers=3)
        assert verify._get_pool().size == 3
        verify.warm_up_verifier(workers=1)  # resized: the old workers are stopped
        assert verify._get_pool().size == 1
        assert is_equivalent("\\frac{1}{2}", "0.5")  # and it still grades
    finally:
        verify._workers = None
    cfg = load_config("configs/toy-verl.yaml", ["semantic.verify_workers=5"])
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="m")
    assert plan.env[verify.WORKERS_ENV] == "5"
    assert f'+ray_kwargs.ray_init.runtime_env.env_vars.{verify.WORKERS_ENV}="5"' in plan.overrides
    assert cfg.section_digest("semantic") == load_config("configs/toy-verl.yaml").section_digest("semantic")
