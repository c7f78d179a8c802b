"""Final answers and their grading: the reward of training and the judge of semantic clustering.

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
  3. math-verify's symbolic check, in a killable child process (`sent._verify_worker`), so that
     every call is bounded (default 5 s) and works from any thread. math-verify's own timeouts use
     ``signal`` and raise off the main thread, where Prefect and verl call reward functions.
  The relation is symmetric (math-verify's ``verify(gold, target)`` is not: we take both
  directions), never raises, and caches normal forms, pair results and (in the child) parses.
- `grade` and the verl-compatible `compute_score` (score +1/-1 as in the paper's scripts).

Departure from the released code: the paper's scripts grade with verl's string-level
``math_dapo`` normaliser; we add the symbolic tier so that ``0.5`` and ``\\frac{1}{2}`` agree, which
also matters for semantic clustering (two spellings of one answer are one class).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

MAX_RESPONSE_CHARS = 200_000
"""Only the last this many characters of a response are searched for its final answer (a 16k-token
response is about 64k characters); longer text is a runaway generation."""
MAX_ANSWER_CHARS = 2_000
"""Longer extracted answers (or ground truths) are compared by their exact text only: real final
answers are short, and every tier above plain text equality costs time that grows with length."""

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_FINAL_RES = (
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE),
    re.compile(r"^[ \t*#_>-]*answer[ \t*_]*[:：][ \t]*(?P<ans>[^\n]+)$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^[ \t]*####[ \t]*(?P<ans>[^\n]+)$", re.MULTILINE),
    re.compile(r"(?:^|(?<=[.!:]\s))the\s+answer\s+is\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE | re.MULTILINE),
)
_INLINE_MATH_RE = re.compile(r"^\$+([^$]+)\$+")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")
_HEDGE_GAP_RE = re.compile(
    r"(?:[\s$,;.:]|\\quad|\\qquad|\\text\{\s*(?:(?:or|and)\s*)?\}|\b(?:or|and)\b)*", re.IGNORECASE
)
MAX_HEDGE_GAP = 64
"""What may stand between two boxes of one hedged final answer: ``\\boxed{1}, \\boxed{2} or \\boxed{3}``."""
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_NON_SPACE_RE = re.compile(r"\S")
Box = tuple[int, int, int, int]
"""``(start, end, content_start, content_end)`` of one box in a text: spans, not slices, so that
nested boxes (``\\boxed{\\boxed{...}}``) cost no copy of each level's content."""


def _closing_braces(text: str) -> dict[int, int]:
    """``{index of "{": index of its matching "}"}`` for every group that closes, in one pass over
    the braces (an escaped ``\\{`` or ``\\}`` neither opens nor closes a group)."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            closing[stack.pop()] = m.start()
    return closing


def _boxes(text: str) -> list[Box]:
    """Every box whose group closes and whose content is not blank, in order (``\\boxed {x}`` and
    ``\\boxed 5`` included); linear in the text."""
    closing = None
    boxes = []
    for m in _BOX_RE.finditer(text):
        pos = m.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text):
            continue
        if text[pos] != "{":
            bare = _BARE_TOKEN_RE.match(text, pos)
            if bare:
                boxes.append((m.start(), bare.end(), pos, bare.end()))
            continue
        if closing is None:
            closing = _closing_braces(text)
        end = closing.get(pos)
        # an unclosed box is a truncated response, an empty one no answer
        if end is not None and _NON_SPACE_RE.search(text, pos + 1, end):
            boxes.append((m.start(), end + 1, pos + 1, end))
    return boxes


def _last_box(text: str, boxes: list[Box]) -> str | None:
    """The content of the last of ``boxes`` (from `_boxes`, at least one), or None when it ends a
    final answer hedged over several boxes with different answers (only spaces, commas, "or"/"and"
    between them): a policy must not be rewarded for listing candidates."""
    start, _, lo, hi = boxes[-1]
    answer = text[lo:hi].strip()
    for prev_start, prev_end, prev_lo, prev_hi in reversed(boxes[:-1]):
        if start - prev_end > MAX_HEDGE_GAP or not _HEDGE_GAP_RE.fullmatch(text, prev_end, start):
            break
        if normalize_answer(text[prev_lo:prev_hi].strip()) != normalize_answer(answer):
            return None
        start = prev_start
    return answer


def _clean_final_line(ans: str) -> str | None:
    ans = ans.strip().strip("*_").strip()
    m = _INLINE_MATH_RE.match(ans)
    if m:  # "The final answer is $3$. I hope it is correct."
        return m.group(1).strip() or None
    m = _SENTENCE_END_RE.search(ans)
    if m:  # "3. I hope it is correct." -> "3" (a decimal point is never followed by a space)
        ans = ans[: m.start()]
    ans = ans.strip().rstrip(".").strip().strip("$").strip()
    return ans or None


def _final_line(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in _FINAL_RES:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group("ans"))
    return None if best is None else best[1]


def extract_answer(text: str) -> str | None:
    """The final answer of a response, or ``None`` when it states none.

    The content of the last ``\\boxed{...}``/``\\fbox{...}`` whose braces balance (nested braces,
    ``\\boxed {x}`` and ``\\boxed 5`` included); an unclosed box (a truncated response) is skipped,
    and a hedge over several boxes with different answers is no answer. Without a box, the last
    explicit final-answer line. Linear in the length of the text, of which only the last
    `MAX_RESPONSE_CHARS` are read.
    """
    if not isinstance(text, str) or not text:
        return None
    text = text[-MAX_RESPONSE_CHARS:]
    boxes = _boxes(text)
    if boxes:
        return _last_box(text, boxes)
    ans = _final_line(text)
    if ans is None:
        return None
    # "Final Answer: The final answer is $3$." -- matches do not overlap, so look inside once more
    # (once: "final answer is final answer is ..." must not recurse per repetition)
    inner_boxes = _boxes(ans)
    inner = _last_box(ans, inner_boxes) if inner_boxes else None
    if inner is not None:
        return inner
    inner_line = _final_line(ans)
    return _clean_final_line(inner_line if inner_line is not None else ans)


# --------------------------------------------------------------------------------------------
# Normal form and exact numbers
# --------------------------------------------------------------------------------------------

_UNIT_WORDS = (
    "degrees|degree|deg|cm|mm|km|m|meters|meter|metres|inches|inch|in|feet|foot|ft|yards|yd|miles|mi|"
    "units|unit|sq|square|cubic|dollars|dollar|cents|cent|seconds|second|sec|s|minutes|minute|min|"
    "hours|hour|hrs|hr|days|day|weeks|week|years|year|mph|kg|g|grams|gram|pounds|pound|lbs|lb|"
    "ounces|oz|liters|liter|l|ml|percent|people|students|points|ways|apples|eggs"
)
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_NUMBER_WITH_UNIT_RE = re.compile(
    rf"^(?P<num>[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?)\s*(?:(?:{_UNIT_WORDS})(?:\^?\{{?[23]\}}?)?)\.?$",
    re.IGNORECASE,
)
_LHS_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*(?P<value>[^=<>]+)$")
_RHS_VAR_RE = re.compile(r"^(?P<value>[^=<>]+?)\s*=\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?$")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)$|^\(([A-Ea-e])\)?$")
_PLAIN_TEXT_RE = re.compile(r"^[A-Za-z][A-Za-z' ]*$")
_SPACING_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~")  # not the LaTeX row break "\\"
_CMD_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


@lru_cache(maxsize=CACHE_SIZE)
def normalize_answer(answer: str) -> str:
    """A canonical spelling of an answer; two answers with equal normal forms are equivalent.

    Keeps the result valid LaTeX, so it can still be handed to the symbolic checker. An answer
    longer than `MAX_ANSWER_CHARS` is only stripped of white space (linear time).
    """
    if len(answer) > MAX_ANSWER_CHARS:
        return re.sub(r"\s+", "", answer)
    s = answer.strip()
    # surrounding math delimiters
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("{,}", "")  # 1{,}000
    s = _SPACING_RE.sub(" ", s)
    # degrees and percent carry no value of their own in these answers
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"^\\?\$\s*", "", s)  # a leading dollar sign: $5 or \$5
    s = s.rstrip(" .")
    # \text{...} around the whole answer, or as a trailing unit after a number
    whole = _TEXT_CMD_RE.fullmatch(s)
    if whole:
        s = whole.group(1).strip()
    elif s.endswith("}"):
        m = re.match(r"^(?P<head>.*?\S)\s*" + _TEXT_CMD_RE.pattern + r"$", s)
        if m and re.fullmatch(r"[+-]?[\d.,/]+|\\frac\{\d+\}\{\d+\}", m.group("head").strip()):
            s = m.group("head").strip()
    m = _LHS_RE.match(s) or _RHS_VAR_RE.match(s)
    if m and not _free_letters(m.group("value")):
        # "x = 3" (or "3 = x") states the value 3; "y = 2x + 1" is an equation and stays one (a line
        # is not its right side), and so does any equation whose other side is more than one variable
        s = m.group("value").strip()
    m = _NUMBER_WITH_UNIT_RE.match(s)
    if m:
        s = m.group("num")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _CHOICE_RE.match(s)
    if m:
        s = (m.group(1) or m.group(2)).upper()
    s = re.sub(r"\\sqrt\s*\{\s*-\s*1\s*\}", "i", s)  # the imaginary unit, spelled as a root
    s = _CMD_SPACE_RE.sub(r"\1{}", s)  # keep "\pi r" from fusing into "\pir"
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?$")
"""At most three exponent digits: ``Fraction("1e999999999")`` would build a billion-digit integer."""
_FRAC_RE = re.compile(r"^(?P<sign>[+-]?)\\frac\{?(?P<p>[+-]?\d+)\}?\{?(?P<q>\d+)\}?$")
_SLASH_RE = re.compile(r"^(?P<p>[+-]?\d+)/(?P<q>\d+)$")
_MIXED_RE = re.compile(r"^(?P<sign>[+-]?)(?P<whole>\d+)\\frac\{(?P<p>\d+)\}\{(?P<q>\d+)\}$")


def _free_letters(s: str) -> set[str]:
    """Latin letters of ``s`` outside LaTeX commands and ``\\text{...}`` (its variables), less the
    letters that usually name constants (``i``, ``e``)."""
    s = _TEXT_CMD_RE.sub("", s)
    return set(re.findall(r"[A-Za-z]", _COMMAND_RE.sub("", s))) - _RESERVED_LETTERS


@lru_cache(maxsize=CACHE_SIZE)
def _as_number(s: str) -> Fraction | None:
    """The exact value of a normal form that is a plain number or a numeric fraction."""
    if len(s) > 40:
        return None
    if _DECIMAL_RE.match(s):
        return Fraction(s)
    m = _MIXED_RE.match(s)
    if m and 0 < int(m.group("p")) < int(m.group("q")):  # a mixed number: 3\frac{1}{2} is 7/2
        value = int(m.group("whole")) + Fraction(int(m.group("p")), int(m.group("q")))
        return -value if m.group("sign") == "-" else value
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m and int(m.group("q")) != 0:
        value = Fraction(int(m.group("p")), int(m.group("q")))
        return -value if m.groupdict().get("sign") == "-" else value
    return None


_GREEK = frozenset(
    [
        "\\alpha",
        "\\beta",
        "\\gamma",
        "\\delta",
        "\\theta",
        "\\lambda",
        "\\mu",
        "\\sigma",
        "\\phi",
        "\\omega",
        "\\tau",
        "\\rho",
    ]
)


_PRODUCT_STARTS = frozenset({"(", "{", "\\pi", "\\frac", "\\sqrt"})


class _ExprParser:
    """Float value of a LaTeX arithmetic expression: numbers, + - * / ^, ``\\cdot``, ``\\times``,
    ``\\frac``, ``\\sqrt`` (and ``\\sqrt[n]``), ``\\pi``, parentheses, braces, implicit products
    (``2\\sqrt{3}``, ``3x``, ``2(x+1)``) and single-letter variables (Latin or a few Greek), whose
    values come from ``env``. Anything else (a comma, a set, a function) is not an expression it
    knows. Evaluation is in floats, so a power tower overflows at once instead of building a huge
    integer."""

    _TOKEN = re.compile(r"\\[A-Za-z]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|[A-Za-z]|[-+*/^(){}\[\]]")

    def __init__(self, text: str, env: dict[str, float] | None = None) -> None:
        self.tokens = self._TOKEN.findall(text)
        if "".join(self.tokens) != text:
            raise ValueError("not an arithmetic expression")
        self.env = env or {}
        self.i = 0

    @classmethod
    def variables(cls, text: str) -> set[str]:
        return {t for t in cls._TOKEN.findall(text) if (len(t) == 1 and t.isalpha()) or t in _GREEK}

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> float:
        value = self.expr()
        if self.peek() is not None:
            raise ValueError("trailing input")
        return value

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> float:
        value = self.factor()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times"):
                self.take()
                value *= self.factor()
            elif tok == "/":
                self.take()
                value /= self.factor()
            elif tok is not None and (tok[0].isdigit() or tok[0] == "." or tok in _PRODUCT_STARTS or tok in self.env):
                value *= self.factor()  # implicit product: 2\\sqrt{3}, 3x, 2(x+1)
            else:
                return value

    def factor(self) -> float:
        if self.peek() in ("-", "+"):
            return -self.factor() if self.take() == "-" else self.factor()
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return math.pow(base, self.factor())  # right-associative; OverflowError on towers
        return base

    def group(self) -> float:
        tok = self.peek()
        if tok == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        if tok is not None and tok.isdigit() and len(tok) > 1:
            self.tokens[self.i] = tok[1:]  # \\frac12: a bare argument is one digit
            return float(tok[0])
        return self.atom()

    def atom(self) -> float:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return float(tok)
        if tok == "\\pi":
            return math.pi
        if tok in self.env:
            return self.env[tok]
        if tok == "\\frac":
            return self.group() / self.group()
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.take()
                n = self.expr()
                self.take("]")
                return math.pow(self.group(), 1.0 / n)
            return math.sqrt(self.group())
        if tok in ("(", "{"):
            value = self.expr()
            self.take(")" if tok == "(" else "}")
            return value
        raise ValueError(f"not an arithmetic token: {tok!r}")


MAX_EXPR_CHARS = 120
"""Longer normal forms skip the in-process evaluator and go to math-verify."""
PROBE_POINTS = 3
"""Expressions in variables are compared at this many fixed points."""
_RESERVED_LETTERS = frozenset({"i", "e"})
"""Letters that usually name constants (the imaginary unit, Euler's number), not real variables:
expressions with them go to math-verify (``i^2`` is ``-1``)."""


def _probe_value(name: str, point: int) -> float:
    # fixed, irrational-looking magnitudes in [0.5, 3); negative at point 1, so that
    # \\sqrt{x^2} and x differ (a root of a negative sends the pair on to math-verify)
    magnitude = 0.5 + ((sum(map(ord, name)) * 0.6180339887 + point * 0.4142135624) % 1.0) * 2.5
    return -magnitude if point == 1 else magnitude


@lru_cache(maxsize=CACHE_SIZE)
def _value_at(s: str, point: int, names: frozenset[str]) -> float | None:
    """Value of the expression ``s`` with every variable in ``names`` at probe ``point``."""
    if len(s) > MAX_EXPR_CHARS:
        return None
    try:
        value = _ExprParser(s, {v: _probe_value(v, point) for v in names}).parse()
    except (ValueError, ZeroDivisionError, OverflowError, IndexError):
        return None
    return value if math.isfinite(value) else None


def _compare_by_value(a: str, b: str) -> bool | None:
    """Decide equivalence of two arithmetic expressions by evaluation, or None when either is not
    one the evaluator knows. Constants: their values. Expressions in variables: their values at
    ``PROBE_POINTS`` fixed points (two different rational expressions agree at a few generic
    points with probability zero)."""
    names = frozenset(_ExprParser.variables(a) | _ExprParser.variables(b))
    if names & _RESERVED_LETTERS:
        return None
    for point in range(PROBE_POINTS if names else 1):
        va, vb = _value_at(a, point, names), _value_at(b, point, names)
        if va is None or vb is None:
            return None
        if not math.isclose(va, vb, rel_tol=CONSTANT_REL_TOL, abs_tol=CONSTANT_ABS_TOL):
            return False
    return True


def _is_arithmetic(s: str) -> bool:
    names = frozenset(_ExprParser.variables(s))
    return not names & _RESERVED_LETTERS and _value_at(s, 0, names) is not None


def _bracketed_items(s: str) -> tuple[str, list[str], str] | None:
    """``("(", ["1", "\\frac{1}{2}"], ")")`` for a tuple or interval written ``(1,\\frac{1}{2})``;
    None for anything else (sets ``\\{...\\}`` are unordered and left to math-verify)."""
    if len(s) < 5 or s[0] not in "([" or s[-1] not in ")]" or s.startswith("\\{"):
        return None
    items, depth, start = [], 0, 1
    for i in range(1, len(s) - 1):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None  # "(1)+(2)": the outer brackets are not one group
        elif c == "," and depth == 0:
            items.append(s[start:i])
            start = i + 1
    if depth != 0:
        return None
    items.append(s[start:-1])
    return (s[0], items, s[-1]) if len(items) >= 2 and all(items) else None


# --------------------------------------------------------------------------------------------
# Relations: equations and inequalities
# --------------------------------------------------------------------------------------------

_RELATION_RE = re.compile(r"\\(?:leq|le|geq|ge|neq|ne|lt|gt)(?![A-Za-z])|<=|>=|!=|[=<>≤≥≠]")
_CANONICAL_OP = {
    "=": "=", "\\neq": "!=", "\\ne": "!=", "!=": "!=", "≠": "!=",
    "<": "<", "\\lt": "<", "\\leq": "<=", "\\le": "<=", "<=": "<=", "≤": "<=",
    ">": ">", "\\gt": ">", "\\geq": ">=", "\\ge": ">=", ">=": ">=", "≥": ">=",
}  # fmt: skip
_FLIPPED = {">": "<", ">=": "<="}
_RELATION_SCAN_RE = re.compile(r"[({\[]|[)}\]]|" + _RELATION_RE.pattern)
"""Brackets (to know the depth) and relation symbols, in one scan."""
_SET_MARKERS = ("\\infty", "\\cup", "\\cap", "\\{", "\\emptyset", "\\varnothing", "\\mathbb")


def _relation(s: str) -> tuple[list[str], list[str]] | None:
    """``(sides, operators)`` of a relation written at the top level of ``s`` (outside brackets):
    ``x\\leq5`` -> ``(["x", "5"], ["<="])``; None when ``s`` is no relation."""
    sides, ops, depth, last = [], [], 0, 0
    for m in _RELATION_SCAN_RE.finditer(s):
        tok = m.group()
        if tok in "({[":
            depth += 1
        elif tok in ")}]":
            depth -= 1
        elif depth == 0:
            sides.append(s[last : m.start()].removeprefix("{}"))  # "\\geq{}x": the normal form's separator
            ops.append(_CANONICAL_OP[tok])
            last = m.end()
    if not ops:
        return None
    sides.append(s[last:].removeprefix("{}"))
    return sides, ops


def _canonical(rel: tuple[list[str], list[str]]) -> tuple[str, str] | None:
    """``(operator, "(right)-(left)")`` of a single relation, with ``>``/``>=`` turned around so
    that ``x\\geq5`` and ``5\\leq x`` read alike; None for chains and empty sides."""
    sides, ops = rel
    if len(ops) != 1:
        return None
    (left, right), op = sides, ops[0]
    if not left.strip() or not right.strip():
        return None
    if op in _FLIPPED:
        left, right, op = right, left, _FLIPPED[op]
    return op, f"({right})-({left})"


RELATION_PROBE_POINTS = PROBE_POINTS + 1
"""Two relations are compared at one point more than expressions: their ratio is a free constant."""


def _compare_relations(a: tuple[list[str], list[str]], b: tuple[list[str], list[str]]) -> bool | None:
    """Two single relations agree when they have the same operator and the differences of their
    sides are proportional: ``f_a = c f_b`` with ``c != 0`` for ``=``/``!=``, ``c > 0`` for ``<``/``<=``
    (``2x+4y-3=0`` and ``y=-\\frac{1}{2}x+\\frac{3}{4}``). Checked by value at fixed points; None when
    the evaluator cannot read a side (chains, sets, functions: math-verify decides)."""
    ca, cb = _canonical(a), _canonical(b)
    if ca is None or cb is None:
        return None
    (op_a, fa), (op_b, fb) = ca, cb
    if op_a != op_b:
        return False
    names = frozenset(_ExprParser.variables(fa) | _ExprParser.variables(fb))
    if names & _RESERVED_LETTERS:
        return None
    ratios = []
    for point in range(RELATION_PROBE_POINTS if names else 1):
        va, vb = _value_at(fa, point, names), _value_at(fb, point, names)
        if va is None or vb is None:
            return None
        zero_a, zero_b = abs(va) <= CONSTANT_ABS_TOL, abs(vb) <= CONSTANT_ABS_TOL
        if zero_a != zero_b:
            return False
        if not zero_a:
            ratios.append(va / vb)
    if not ratios:
        return None  # both sides vanish at every probe (0=0, x=x): nothing to compare by value
    c = ratios[0]
    if not all(math.isclose(r, c, rel_tol=CONSTANT_REL_TOL * 1e3) for r in ratios):
        return False
    return c > 0 if op_a in ("<", "<=") else True


def _is_set_like(s: str) -> bool:
    """Intervals and sets, which an inequality can equal (``x>3`` and ``(3,\\infty)``)."""
    return _bracketed_items(s) is not None or any(marker in s for marker in _SET_MARKERS)


# --------------------------------------------------------------------------------------------
# The symbolic tier: math-verify in killable child processes
# --------------------------------------------------------------------------------------------


class _Worker:
    """One `sent._verify_worker` process and its pipes. Starting one does not wait for it: the
    first question waits for its ready line, within that question's deadline."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sent._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env=env,
        )
        self._buf = b""
        self.ready = False

    def _read_line(self, deadline: float) -> dict | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died
                raise RuntimeError("the math-verify worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            self.ready = self._read_line(deadline) is not None
        return self.ready

    def ask(self, a: str, b: str, deadline: float) -> bool | None:
        """True/False, or None when the worker did not answer before ``deadline`` (monotonic)."""
        self.proc.stdin.write((json.dumps({"a": a, "b": b}) + "\n").encode())
        reply = self._read_line(deadline)
        return None if reply is None else bool(reply.get("eq"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL without waiting (the caller's deadline is running); a daemon thread reaps it."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        threading.Thread(target=self.proc.wait, daemon=True, name="sent-verifier-reaper").start()


class _VerifierPool:
    """A few verifier processes shared by all threads of this process.

    A call borrows an idle worker, and kills it when it overruns the caller's deadline; a
    replacement is started at once, in the background, so that the next call finds it importing
    (or ready) instead of paying the whole start-up. Every wait (for a free worker, for a
    starting one, for the answer) counts against the one deadline. After ``fork`` (Ray,
    DataLoader workers) the child builds its own pool instead of sharing the parent's pipes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pid = os.getpid()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failures = 0
        for _ in range(size):
            self._idle.put(None)

    def _spawn(self) -> _Worker | None:
        if self._start_failures >= 3:
            return None
        try:
            worker = _Worker()
        except OSError as exc:
            self._start_failures += 1
            logger.error("cannot start the math-verify worker (%s); symbolic checks are off", exc)
            return None
        with self._lock:
            self._all = [w for w in self._all if w.alive()]
            self._all.append(worker)
        return worker

    def warm_up(self) -> None:
        """Start every worker now (they import sympy in the background)."""
        held = []
        while True:
            try:
                held.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in held:
            self._idle.put(w if w is not None and w.alive() else self._spawn())

    def equivalent(self, a: str, b: str, deadline: float) -> bool | None:
        """math-verify's symmetric verdict, or None when it was not reached before ``deadline``."""
        try:
            worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            logger.warning("no verifier free in time; %r vs %r stays undecided", a, b)
            return None
        try:
            if worker is None or not worker.alive():
                worker = self._spawn()
                if worker is None:
                    return None
            if not worker.wait_ready(deadline):
                return None  # still starting: the next call goes on waiting for it
            result = worker.ask(a, b, deadline)
            if result is None:
                logger.warning("symbolic check of %r vs %r ran out of time; undecided", a[:200], b[:200])
                worker.kill()
                worker = self._spawn()
            return result
        except Exception as exc:
            logger.warning("verifier failed on %r vs %r: %s", a[:200], b[:200], exc)
            if worker is not None:
                worker.kill()
            worker = self._spawn()
            return None
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            for w in self._all:
                w.kill()
            self._all.clear()


_pool: _VerifierPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _VerifierPool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._pid != os.getpid():
            size = int(os.environ.get("SENT_VERIFY_WORKERS", "2"))
            _pool = _VerifierPool(max(1, size))
        return _pool


def warm_up_verifier() -> None:
    """Start the math-verify workers now, so that the first symbolic check does not pay their
    start-up (sympy's import) out of its time budget. Curation, training and evaluation call it."""
    _get_pool().warm_up()


@atexit.register
def _close_pool() -> None:
    if _pool is not None and _pool._pid == os.getpid():
        _pool.close()


def _brace_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c == "{":
            depth += 1
            best = max(best, depth)
        elif c == "}":
            depth -= 1
    return best


_symbolic_cache: dict[tuple[str, str], bool] = {}


def _symbolic_equivalent(a: str, b: str, deadline: float) -> bool | None:
    """math-verify on ``(a, b)`` in sorted order (so cache and result are symmetric); decided
    results are cached, undecided ones are not (a later call with time left may decide them)."""
    key = (a, b)
    if key in _symbolic_cache:
        return _symbolic_cache[key]
    result = _get_pool().equivalent(a, b, deadline)
    if result is not None:
        if len(_symbolic_cache) >= CACHE_SIZE:
            _symbolic_cache.clear()
        _symbolic_cache[key] = result
    return result


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
    ra, rb = _relation(na), _relation(nb)
    if ra is not None or rb is not None:
        if ra is None or rb is None:
            # an equation or inequality is never a bare value: "a+3z=0" is not "0", "7=11a+c" is
            # not "11a+c" (math-verify would compare one side); only a set or interval can equal
            # an inequality ("x>3" and "(3,\\infty)"), and math-verify decides those
            other = na if ra is None else nb
            if not _is_set_like(other):
                return False
        else:
            decided = _compare_relations(ra, rb)
            if decided is not None:
                return decided
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


def equivalence(a: str | None, b: str | None, *, timeout: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """`is_equivalent`, telling apart "not equivalent" (False) from "not decided within ``timeout``"
    (None: the symbolic check ran out of time or could not run)."""
    deadline = time.monotonic() + timeout
    try:
        if a is None or b is None:
            return False
        return _equivalent_forms(normalize_answer(str(a)), normalize_answer(str(b)), deadline)
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


def grade(response: str, ground_truth: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the final answer of ``response`` matches ``ground_truth`` (any of several)."""
    return grade_answer(extract_answer(response), ground_truth, timeout=timeout) is True


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
    not decided within it scores as wrong with ``undecided=True``. ``data_source`` and
    ``extra_info`` are accepted for verl's calling convention; every source is graded as maths.
    """
    del data_source, extra_info
    start = time.monotonic()
    pred = extract_answer(solution_str)
    verdict = grade_answer(pred, ground_truth, timeout=max(0.0, timeout - (time.monotonic() - start)))
    acc = verdict is True
    return {
        "score": float(correct_score if acc else incorrect_score),
        "acc": acc,
        "pred": pred,
        "undecided": verdict is None,
    }
