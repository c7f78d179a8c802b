"""Semantic-entropy scoring throughput at N = 8 (extract + cluster + entropy), and the speed-up
over the naive approach (math-verify's parse + verify on all N(N-1)/2 pairs of every problem).

Target (issue 2): >= 200 problems/s. Responses are realistic: a worked line ending in a box,
mostly repeated answers, equivalent spellings (198 / 198.0 / \\frac{396}{2} / 198 cm; 2x+5 / 5+2x),
wrong answers, and responses without any final answer. "Cold" means every answer string is new to
the caches, as when curating a fresh data set.
"""

from __future__ import annotations

import random
import time

from sent.rewards import extract_answer, is_equivalent
from sent.semantic import cluster, discrete_entropy

N = 8
PROBLEMS = 1000
NAIVE_PROBLEMS = 60


def make_problem(rng: random.Random) -> list[str]:
    """Eight responses to one problem; the answer kinds mix as in MATH-style data: integers
    (60 %), constants with roots or pi (20 %), and expressions, tuples or intervals (20 %)."""
    v = rng.randint(2, 400)
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    kind = rng.random()
    if kind < 0.6:  # integer answers: spellings of v, a halving slip, a near miss
        right = [str(v), f"{v}.0", f"\\frac{{{2 * v}}}{{2}}", f"{v}\\text{{ cm}}", f"{v:,}"]
        wrong = [f"\\frac{{{v}}}{{2}}", f"{v / 2}", str(v + rng.randint(1, 9))]
    elif kind < 0.8:  # constants
        right = [f"{v}\\sqrt{{2}}", f"\\sqrt{{{2 * v * v}}}", f"{v} \\sqrt 2"]
        wrong = [f"{v}\\pi", str(v), f"{v}\\sqrt{{3}}"]
    else:  # symbolic: expressions in x, tuples, intervals
        right = [f"{a}x+{b}", f"{b}+{a}x", f"{a}x + {b}", f"({a},{b})", f"[{b}, {b + a})"]
        wrong = [f"{a}x-{b}", f"{b}x+{a}", f"({b},{a})", f"({b}, {b + a})"]
    pool = [rng.choice(right)] * 5 + [rng.choice(right), rng.choice(wrong), rng.choice(wrong)]
    out = []
    for _ in range(N):
        if rng.random() < 0.08:
            out.append("I tried several approaches but ran out of space and")  # truncated: no answer
        else:
            out.append(f"We compute step by step: {v} - 1 + 1 = {v}. So the answer is $\\boxed{{{rng.choice(pool)}}}$.")
    return out


def se_scoring(problems: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for responses in problems:
        discrete_entropy(cluster([extract_answer(r) for r in responses]))
    return time.perf_counter() - t0


def naive_scoring(problems: list[list[str]]) -> float:
    from math_verify import parse, verify

    t0 = time.perf_counter()
    for responses in problems:
        parsed = [parse(r) for r in responses]
        ids = list(range(N))
        for i in range(N):
            for j in range(i + 1, N):
                if parsed[i] and parsed[j] and verify(parsed[i], parsed[j]):
                    ids[j] = min(ids[j], ids[i])
        discrete_entropy(ids)
    return time.perf_counter() - t0


def main() -> None:
    rng = random.Random(0)
    problems = [make_problem(rng) for _ in range(PROBLEMS)]
    is_equivalent("\\sqrt{8}", "2\\sqrt{2}")  # start the verifier process outside the timing
    cold = se_scoring(problems)  # first pass: empty caches (new strings for every problem)
    warm = se_scoring(problems)  # second pass: cached normal forms and symbolic results
    naive = naive_scoring(problems[:NAIVE_PROBLEMS]) / NAIVE_PROBLEMS * PROBLEMS
    print(f"N = {N}, {PROBLEMS} problems")
    print(f"sent.semantic, cold caches   {PROBLEMS / cold:8.0f} problems/s")
    print(f"sent.semantic, warm caches   {PROBLEMS / warm:8.0f} problems/s")
    print(f"naive pairwise math-verify   {PROBLEMS / naive:8.1f} problems/s (on {NAIVE_PROBLEMS} problems)")
    print(f"speed-up (cold) over naive   {naive / cold:8.1f}x")


if __name__ == "__main__":
    main()
