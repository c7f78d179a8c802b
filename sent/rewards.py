"""The reward function verl loads by path (``custom_reward_function.path``, `sent.engines.verl`):
`compute_score`, and the grading API under its old names. The code is in `sent.grading`.

`compute_score` here is `sent.grading.compute_score` plus one thing only verl needs: under
``curriculum.mode: online`` a training row carries its place in the stage's stream, and each
rollout's answer is appended to the stage's record (`sent.online_record`), from which the trainer
computes the online SE."""

from collections.abc import Sequence
from typing import Any

from sent import online_record
from sent.grading import (
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_CHARS,
    MAX_RESPONSE_CHARS,
    equivalence,
    extract_answer,
    grade,
    grade_answer,
    is_equivalent,
    normalize_answer,
    warm_up_verifier,
)
from sent.grading import compute_score as grade_response

__all__ = [  # sent.grading's public names, with this compute_score
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
    """`sent.grading.compute_score` (same arguments and result), recording the rollout when
    ``extra_info`` places it in an online stage."""
    result = grade_response(
        data_source,
        solution_str,
        ground_truth,
        extra_info,
        correct_score=correct_score,
        incorrect_score=incorrect_score,
        timeout=timeout,
    )
    if extra_info and extra_info.get(online_record.KEY):
        online_record.append(extra_info, str(extra_info.get("id", "")), extract_answer(solution_str), result["acc"])
    return result
