"""The reward function verl loads by path (``custom_reward_function.path``, `sent.engines.verl`):
`compute_score`, and the grading API under its old names. The code is in `sent.grading`."""

from sent.grading import (
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_CHARS,
    MAX_RESPONSE_CHARS,
    compute_score,
    equivalence,
    extract_answer,
    grade,
    grade_answer,
    is_equivalent,
    normalize_answer,
    warm_up_verifier,
)

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
