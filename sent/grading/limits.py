"""The bounds every grading tier shares."""

from __future__ import annotations

DEFAULT_TIMEOUT_S = 5.0
"""Upper bound of one symbolic comparison, in seconds."""
MAX_SYMBOLIC_CHARS = 400
"""Longer answers are compared by normal form only: real final answers are short, and a long
one is more likely a runaway generation than a formula worth a sympy call."""
MAX_BRACE_DEPTH = 32
"""Deeper nesting is compared by normal form only (sympy's LaTeX parser recurses on it)."""
CACHE_SIZE = 1 << 16
CONSTANT_REL_TOL = 1e-9
"""Two constant expressions are equal when their float values agree to this relative tolerance."""
CONSTANT_ABS_TOL = 1e-12
MAX_RESPONSE_CHARS = 200_000
"""Only the last this many characters of a response are searched for its final answer (a 16k-token
response is about 64k characters); longer text is a runaway generation."""
MAX_ANSWER_CHARS = 2_000
"""Longer extracted answers (or ground truths) are compared by their exact text only: real final
answers are short, and every tier above plain text equality costs time that grows with length."""
RESERVED_LETTERS = frozenset({"i", "e"})
"""Letters that usually name constants (the imaginary unit, Euler's number), not real variables:
expressions with them go to math-verify (``i^2`` is ``-1``)."""
