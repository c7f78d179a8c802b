"""This project's grader beside math-verify used directly, against human verdicts.

    python benchmarks/bench_grader_agreement.py [--shared ../shared/data] [--show 40]

The corpus, built at run time (rows carry a response, a gold answer and a human verdict):

- ``reference``: the MATH500 reference solutions against their own answers, and GSM8K test
  solutions against theirs (the first 150). A reference solution is right by definition.
- ``styled``: model-style responses written from the six benchmarks' gold answers (a fixed sample):
  the gold in a box, in Minerva's closing line, in an "Answer:" line, with a label (``x =``), with a
  unit, as a decimal or a mixed number or with thousands separators where the gold is a plain
  number or fraction, respaced tuples and matrices, a list answered box by box; and wrong ones: a
  neighbouring number, another problem's gold, the gold hedged with a wrong value, a truncated box.
  Each verdict follows from how the row was made (a respelling of the gold's value is right;
  another value, a hedge or a cut-off box is wrong).
- ``hand``: `benchmarks/data/grader_cases.jsonl`, cases written by hand for the classes of answer
  that graders get wrong (percent, intervals, labelled answers, hedges, lists in boxes, typefaces,
  option letters, matrices, reward hacks), each with its verdict and the reason in ``note``.

math-verify is called as its README shows: ``verify(parse("$" + gold + "$"), parse(response))``.
Ours is `sent.rewards.compute_score`, the training reward. The report: agreement, each grader's
accuracy against the human verdicts, the disagreements (who is right, and the row's note), and
on the last line ``grader accuracy vs human: sent X.X%, math-verify Y.Y% (n=N); false rewards: K``,
K counting rows this project rewards that both math-verify and the human reject.
Without ``../shared/data`` only the hand-written rows run (and the script says so).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva")
STYLED_GOLDS = 260
"""Gold answers sampled (seeded) from the six benchmarks for the styled rows."""


@dataclass(frozen=True)
class Row:
    id: str
    source: str
    response: str
    gold: str
    human: bool
    note: str


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reference_rows(shared: Path) -> list[Row]:
    rows = [
        Row(r["id"], "reference", r["solution"], r["answer"], True, "a MATH500 reference solution")
        for r in _jsonl(shared / "train" / "math500_solutions.jsonl")
    ]
    rows += [
        Row(r["id"], "reference", r["solution"], r["answer"], True, "a GSM8K reference solution")
        for r in _jsonl(shared / "train" / "gsm8k_test.jsonl")[:150]
    ]
    return rows


_INT_RE = re.compile(r"^-?\d+$")
_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_PREFIXES = (
    "Let us work through it step by step.\n\nAfter simplifying, ",
    "We set up the equations and solve them.\n\nTherefore ",
    "Checking each case carefully, ",
)


def _boxed(gold: str, k: int) -> str:
    return f"{_PREFIXES[k % len(_PREFIXES)]}the answer is $\\boxed{{{gold}}}$."


def _terminating(q: int) -> bool:
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def _exact_decimal(value: Fraction) -> str:
    """The finite decimal expansion of a fraction whose denominator has no prime but 2 and 5."""
    sign, value = ("-" if value < 0 else ""), abs(value)
    whole, rest = divmod(value.numerator, value.denominator)
    digits = ""
    while rest:
        rest *= 10
        digit, rest = divmod(rest, value.denominator)
        digits += str(digit)
    return f"{sign}{whole}" + (f".{digits}" if digits else "")


def styled_rows(shared: Path) -> list[Row]:
    golds = []
    for name in BENCHMARKS:
        golds += [(r["id"], r["answer"].strip()) for r in _jsonl(shared / "benchmarks" / f"{name}.jsonl")]
    rng = random.Random(0)
    sample = rng.sample(golds, min(STYLED_GOLDS, len(golds)))
    rows: list[Row] = []

    def add(pid: str, kind: str, response: str, gold: str, human: bool) -> None:
        rows.append(Row(f"{pid}/{kind}", "styled", response, gold, human, kind))

    for k, (pid, gold) in enumerate(sample):
        math = gold.replace("$", "")  # a few golds carry their own math delimiters; a response has its own
        add(pid, "boxed", _boxed(math, k), gold, True)
        add(pid, "closing line", f"So we are done.\nThe final answer is ${math}$. I hope it is correct.", gold, True)
        add(pid, "answer line", f"Putting it together.\n\n**Answer:** ${math}$", gold, True)
        add(pid, "truncated box", _boxed(math, k)[: -len("}$.") - max(1, len(math) // 2)], gold, False)
        other = sample[(k + 7) % len(sample)][1]
        if re.sub(r"\s", "", other) != re.sub(r"\s", "", gold) and not (_INT_RE.match(other) and _INT_RE.match(gold)):
            add(pid, "another problem's gold", _boxed(other, k), gold, False)
        if _INT_RE.match(gold):
            n = int(gold)
            add(pid, "labelled", f"Solving, we get $\\boxed{{x = {n}}}$.", gold, True)
            add(pid, "with a unit", f"The result is $\\boxed{{{n} \\text{{ units}}}}$.", gold, True)
            add(pid, "decimal", _boxed(f"{n}.0", k), gold, True)
            add(pid, "neighbour", _boxed(str(n + 1), k), gold, False)
            add(pid, "hedged", f"It is either $\\boxed{{{n}}}$ or $\\boxed{{{n + 2}}}$.", gold, False)
            if abs(n) >= 1000:
                add(pid, "thousands separator", _boxed(f"{n:,}", k), gold, True)
            continue
        m = _FRAC_RE.match(gold)
        if m:
            sign, p, q = m.group(1), int(m.group(2)), int(m.group(3))
            value = Fraction(p, q) * (-1 if sign else 1)
            add(pid, "slash fraction", _boxed(f"{sign}{p}/{q}", k), gold, True)
            if _terminating(q):
                add(pid, "decimal", _boxed(_exact_decimal(value), k), gold, True)
            if p > q and not sign and value.denominator != 1:
                whole, rest = divmod(value.numerator, value.denominator)
                add(pid, "mixed number", _boxed(f"{whole}\\frac{{{rest}}}{{{value.denominator}}}", k), gold, True)
            if p != q:
                add(pid, "reciprocal", _boxed(f"{sign}\\frac{{{q}}}{{{p}}}", k), gold, False)
            continue
        if gold.startswith(("(", "\\left(")) and "," in gold:
            add(pid, "respaced tuple", _boxed(re.sub(r",\s*", " ,  ", gold), k), gold, True)
        if "\\begin{pmatrix}" in gold:
            add(pid, "respaced matrix", _boxed(gold.replace("&", " & ").replace("\\\\", " \\\\ "), k), gold, True)
        items = [i.strip() for i in gold.split(",")]
        if len(items) >= 2 and all(_INT_RE.match(i) for i in items):
            boxes = " and ".join(f"$\\boxed{{{i}}}$" for i in items)
            add(pid, "list in boxes", f"The values are {boxes}.", gold, True)
    return rows


def hand_rows() -> list[Row]:
    path = ROOT / "benchmarks" / "data" / "grader_cases.jsonl"
    return [Row(r["id"], "hand", r["response"], r["gold"], bool(r["human"]), r["note"]) for r in _jsonl(path)]


def ours(row: Row) -> bool:
    from sent.rewards import compute_score

    return bool(compute_score("math", row.response, row.gold)["acc"])


def math_verify(row: Row) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${row.gold}$"), parse(row.response)))
    except Exception:  # math-verify's own failures count as "not verified", as its users see them
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the shared data directory")
    parser.add_argument("--show", type=int, default=60, help="disagreements to list (all mistakes are counted)")
    args = parser.parse_args()
    shared = Path(args.shared)
    rows = hand_rows()
    if (shared / "benchmarks").is_dir():
        rows = reference_rows(shared) + styled_rows(shared) + rows
    else:
        print(f"{shared} not found: only the {len(rows)} hand-written rows")
    from sent.rewards import warm_up_verifier

    warm_up_verifier(wait_s=30)
    t0 = time.perf_counter()
    verdicts = [(row, ours(row), math_verify(row)) for row in rows]
    seconds = time.perf_counter() - t0
    n = len(verdicts)
    agree = sum(a == b for _, a, b in verdicts)
    right_ours = sum(a == r.human for r, a, _ in verdicts)
    right_mv = sum(b == r.human for r, _, b in verdicts)
    false_rewards = [r for r, a, b in verdicts if a and not b and not r.human]
    by_source: dict[str, list[tuple[Row, bool, bool]]] = {}
    for v in verdicts:
        by_source.setdefault(v[0].source, []).append(v)
    print(f"corpus: {n} rows ({', '.join(f'{s} {len(v)}' for s, v in by_source.items())}); graded in {seconds:.0f} s")
    for source, vs in by_source.items():
        print(
            f"  {source:9s} sent {100 * sum(a == r.human for r, a, _ in vs) / len(vs):5.1f}%   "
            f"math-verify {100 * sum(b == r.human for r, _, b in vs) / len(vs):5.1f}%"
        )
    print(f"agreement between the two graders: {100 * agree / n:.1f}% ({n - agree} rows differ)")
    differ = [(r, a, b) for r, a, b in verdicts if a != b]
    print(f"\ndisagreements (right: the grader that matches the human verdict), first {args.show} of {len(differ)}:")
    for r, a, b in differ[: args.show]:
        right = "sent" if a == r.human else "math-verify"
        print(f"  [{r.source}] {r.id}: human {r.human}, sent {a}, math-verify {b} -> {right} right ({r.note})")
        print(f"      gold {r.gold!r}; response ends {r.response[-90:]!r}")
    both_wrong = [r for r, a, b in verdicts if a != r.human and b != r.human]
    if both_wrong:
        print(f"\nrows both graders get wrong: {len(both_wrong)}")
        for r in both_wrong[: args.show]:
            print(f"  [{r.source}] {r.id}: human {r.human} ({r.note}); gold {r.gold!r}; ends {r.response[-70:]!r}")
    print(
        f"grader accuracy vs human: sent {100 * right_ours / n:.1f}%, math-verify {100 * right_mv / n:.1f}% "
        f"(n={n}); false rewards: {len(false_rewards)}"
    )


if __name__ == "__main__":
    main()
