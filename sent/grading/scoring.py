"""Equivalence of two answers through the three tiers, and grading a response against its
reference: `equivalence`, `is_equivalent`, `grade_answer`, `grade` and verl's `compute_score`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sent import online_record
from sent.grading.expr import (
    _bracketed_items,
    _compare_by_value,
    _compare_relations,
    _is_arithmetic,
    _is_set_like,
    _relation,
    labelled_value,
    relation_as_interval,
)
from sent.grading.extract import extract_answer, extract_answers, top_level_items
from sent.grading.limits import DEFAULT_TIMEOUT_S, MAX_ANSWER_CHARS, MAX_BRACE_DEPTH, MAX_SYMBOLIC_CHARS
from sent.grading.normalize import _PLAIN_TEXT_RE, _as_number, has_percent, normalize_answer
from sent.grading.verify import _brace_depth, _symbolic_equivalent

OPTION_LETTERS = frozenset("ABCDE")
"""Multiple-choice options: ``b`` and ``\\text{(B)}`` name the same one."""

logger = logging.getLogger(__name__)


def _equivalent_forms(na: str, nb: str, deadline: float) -> bool | None:
    """Equivalence of two normal forms; None when the symbolic tier was not reached in time."""
    if not na or not nb:
        return False
    if na == nb:
        return True
    if max(len(na), len(nb)) > MAX_ANSWER_CHARS:
        return False  # over-long answers match by their exact text only
    xa, xb = _as_number(na), _as_number(nb)
    if xa is not None and xb is not None:
        return xa == xb
    if _PLAIN_TEXT_RE.match(na) and _PLAIN_TEXT_RE.match(nb) and (len(na) > 1 or len(nb) > 1):
        # words ("Monday", "even"): no maths to compare beyond the spelling
        return na.casefold() == nb.casefold()
    if na.upper() == nb.upper() and na.upper() in OPTION_LETTERS:
        return True
    ra, rb = _relation(na), _relation(nb)
    if ra is not None and rb is not None:
        decided = _compare_relations(ra, rb)
        if decided is not None:
            return decided
    elif (relation := ra if ra is not None else rb) is not None:  # one side a relation, the other not
        other = nb if ra is not None else na
        value = labelled_value(relation)
        if value is not None:  # "g(2)=5", "|PQ|=4", "y=x^2-4x+4": the value of a named quantity
            return _equivalent_forms(normalize_answer(value), other, deadline)
        interval = relation_as_interval(relation)
        if interval is not None and _bracketed_items(other) is not None:  # "1<x\\le3" and "(1,3]"
            return _equivalent_forms(interval, other, deadline)
        # an equation or inequality is never a bare value: "a+3z=0" is not "0", "7=11a+c" is
        # not "11a+c" (math-verify would compare one side); only a set or interval can equal
        # an inequality ("x>3" and "(3,\\infty)"), and math-verify decides those
        if not _is_set_like(other):
            return False
        return _symbolic_or_none(na, nb, deadline)
    la, lb = _bracketed_items(na), _bracketed_items(nb)
    if la is not None and lb is not None:
        # tuples and intervals: same brackets, same length, equivalent items in order
        if la[0] != lb[0] or la[2] != lb[2] or len(la[1]) != len(lb[1]):
            return False
        undecided = False
        for x, y in zip(la[1], lb[1], strict=True):
            item = _equivalent_forms(normalize_answer(x), normalize_answer(y), deadline)
            if item is False:
                return False
            undecided |= item is None
        return None if undecided else True
    by_value = _compare_by_value(na, nb)
    if by_value is not None:
        # constants (\\sqrt{8} vs 2\\sqrt{2}) and expressions (2x+5 vs 5+2x): values decide
        return by_value
    if (la is None) != (lb is None) and (_is_arithmetic(na) or _is_arithmetic(nb)):
        return False  # a tuple or interval is never a scalar expression
    return _symbolic_or_none(na, nb, deadline)


def _symbolic_or_none(na: str, nb: str, deadline: float) -> bool | None:
    if max(len(na), len(nb)) > MAX_SYMBOLIC_CHARS or max(_brace_depth(na), _brace_depth(nb)) > MAX_BRACE_DEPTH:
        return False
    lo, hi = sorted((na, nb))
    return _symbolic_equivalent(lo, hi, deadline)


def _percent_equivalent(percent: str, other: str) -> bool:
    """A percentage against an answer without the sign (both in normal form, the sign dropped):
    the same number spelled the same way (``25\\%`` and ``25``: the sign left out), or the
    percentage's value (``25\\%`` and ``0.25``, ``50\\%`` and ``\\frac12``). Never by dropping the
    sign from a different spelling: ``0.5\\%`` is 0.005, not ``\\frac12``."""
    if percent == other:
        return True
    x, y = _as_number(percent), _as_number(other)
    return x is not None and y is not None and x / 100 == y


def equivalence(a: str | None, b: str | None, *, timeout: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """`is_equivalent`, telling apart "not equivalent" (False) from "not decided within ``timeout``"
    (None: the symbolic check ran out of time or could not run)."""
    deadline = time.monotonic() + timeout
    try:
        if a is None or b is None:
            return False
        a, b = str(a), str(b)
        na, nb = normalize_answer(a), normalize_answer(b)
        if has_percent(a) != has_percent(b):
            return _percent_equivalent(*((na, nb) if has_percent(a) else (nb, na)))
        return _equivalent_forms(na, nb, deadline)
    except Exception as exc:
        logger.warning("is_equivalent(%r, %r) failed: %s", str(a)[:200], str(b)[:200], exc)
        return False


def is_equivalent(a: str | None, b: str | None, *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two final answers are mathematically equivalent.

    Symmetric, never raises, returns within ``timeout`` seconds (the whole call: waiting for a
    verifier, its start-up and the symbolic check), and safe to call from any thread. ``None``
    or empty answers are equivalent to nothing; what is not decided in time counts as not
    equivalent (`equivalence` tells the two apart).
    """
    return equivalence(a, b, timeout=timeout) is True


def _ground_truths(ground_truth: Any) -> list[str]:
    if isinstance(ground_truth, str):
        values = [ground_truth]
    elif isinstance(ground_truth, Sequence):
        values = [str(g) for g in ground_truth]
    else:
        values = [str(ground_truth)]
    # a ground truth written as a full solution or "\boxed{x}" counts by its final answer
    boxed = ("\\boxed", "\\fbox")
    return [(extract_answer(g) or g) if any(b in g for b in boxed) else g for g in values]


def grade_answer(
    pred: str | None, ground_truth: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S
) -> bool | None:
    """Whether an extracted answer matches ``ground_truth`` (any of several), with one time budget
    for all of them: True, False, or None when no reference matched and some comparison was not
    decided in time (graded as wrong, and counted by the callers)."""
    if pred is None:
        return False
    deadline = time.monotonic() + timeout
    undecided = False
    for gt in _ground_truths(ground_truth):
        verdict = equivalence(pred, gt, timeout=max(0.0, deadline - time.monotonic()))
        if verdict:
            return True
        undecided |= verdict is None
    return None if undecided else False


def response_answer(response: str, ground_truth: str | Sequence[str]) -> str | None:
    """The final answer of ``response`` as graded against ``ground_truth``: `extract_answer`'s,
    except that a final answer given in several boxes with different values (a hedge, no answer
    by itself) is the list of those values when a reference is a list of as many items
    (``\\boxed{2}`` and ``\\boxed{-3}`` for ``2, -3``)."""
    answer = extract_answer(response)
    return answer if answer is not None else _hedged_answer(response, ground_truth)


def _hedged_answer(response: str, ground_truth: str | Sequence[str]) -> str | None:
    """`response_answer` of a response without an answer of its own (`extract_answer` is None)."""
    boxes = extract_answers(response)
    if len(boxes) > 1 and any(len(top_level_items(gt)) == len(boxes) for gt in _ground_truths(ground_truth)):
        return ", ".join(boxes)
    return None


def grade(response: str, ground_truth: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the final answer of ``response`` matches ``ground_truth`` (any of several)."""
    return grade_answer(response_answer(response, ground_truth), ground_truth, timeout=timeout) is True


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: str | Sequence[str],
    extra_info: dict | None = None,
    *,
    correct_score: float = 1.0,
    incorrect_score: float = -1.0,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """verl's custom reward function signature (``reward.custom_reward_function``).

    Returns ``{"score", "acc", "pred", "undecided"}``: +1/-1 by default as in the paper's scripts;
    set ``correct_score``/``incorrect_score`` (verl: ``reward_kwargs``) for 1/0. ``timeout`` is the
    budget of the whole response (extraction and every comparison); a response whose grading was
    not decided within it scores as wrong with ``undecided=True``. ``data_source`` is accepted for
    verl's calling convention; every source is graded as maths.

    Under ``curriculum.mode: online`` on verl, ``extra_info`` places a training row in its stage's
    stream, and the rollout's extracted answer and correctness are appended to the stage's record
    (`sent.online_record`), from which the trainer computes the online SE; otherwise it is unused.
    """
    del data_source
    start = time.monotonic()
    answer = extract_answer(solution_str)
    pred = answer if answer is not None else _hedged_answer(solution_str, ground_truth)
    verdict = grade_answer(pred, ground_truth, timeout=max(0.0, timeout - (time.monotonic() - start)))
    acc = verdict is True
    if extra_info:
        online_record.append(extra_info, str(extra_info.get("id", "")), answer, acc)
    return {
        "score": float(correct_score if acc else incorrect_score),
        "acc": acc,
        "pred": pred,
        "undecided": verdict is None,
    }
