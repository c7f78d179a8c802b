"""Final answers and their grading: the reward of training and the judge of semantic clustering.

Modules: `extract` (the final answer of a response), `normalize` (normal forms, exact numbers),
`expr` (in-process decisions: expressions by value, tuples, relations), `verify` (math-verify in
killed-on-deadline child processes, `worker`), `scoring` (the tiers together, and grading a
response), `limits` (the bounds).

What is built (METHOD.md §1, §4):
- `extract_answer`: the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else an explicit
  final-answer line ("The final answer is X", "Answer: X", GSM8K's "#### X").
- `is_equivalent`: mathematical equivalence of two answers, in three tiers:
  1. a normal form (`normalize_answer`): LaTeX spacing, ``\\left``/``\\right``, ``\\dfrac``, degrees,
     percent, units in ``\\text{}``, ``x = 3``, thousands separators, choice letters; equal normal
     forms are equivalent;
  2. in-process decisions: exact rationals when both sides are plain numbers or ``\\frac{p}{q}``;
     tuples and intervals item by item; arithmetic expressions by value (``\\sqrt{8}`` vs
     ``2\\sqrt{2}``; ``2x+5`` vs ``5+2x`` at three fixed points of x);
  3. math-verify's symbolic check, in a killable child process (`sent.grading.worker`), so that
     every call is bounded (default 5 s) and works from any thread. math-verify's own timeouts use
     ``signal`` and raise off the main thread, where Prefect and verl call reward functions.
  The relation is symmetric (math-verify's ``verify(gold, target)`` is not: we take both
  directions), never raises, and caches normal forms, pair results and (in the child) parses.
- `grade` and the verl-compatible `compute_score` (score +1/-1 as in the paper's scripts).

Departure from the released code: the paper's scripts grade with verl's string-level
``math_dapo`` normaliser; we add the symbolic tier so that ``0.5`` and ``\\frac{1}{2}`` agree, which
also matters for semantic clustering (two spellings of one answer are one class).
"""

from sent.grading.extract import extract_answer
from sent.grading.limits import DEFAULT_TIMEOUT_S, MAX_ANSWER_CHARS, MAX_RESPONSE_CHARS
from sent.grading.normalize import normalize_answer
from sent.grading.scoring import compute_score, equivalence, grade, grade_answer, is_equivalent
from sent.grading.verify import warm_up_verifier

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_ANSWER_CHARS",
    "MAX_RESPONSE_CHARS",
    "compute_score",
    "equivalence",
    "extract_answer",
    "grade",
    "grade_answer",
    "is_equivalent",
    "normalize_answer",
    "warm_up_verifier",
]
