"""In-process decisions: LaTeX arithmetic evaluated to floats (an expression parser, values at
fixed probe points), tuples and intervals item by item, and equations and inequalities."""

from __future__ import annotations

import math
import re
from functools import lru_cache

from sent.grading.limits import CACHE_SIZE, CONSTANT_ABS_TOL, CONSTANT_REL_TOL, RESERVED_LETTERS

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
        if "".join(self.tokens) != text.replace(" ", ""):  # a space only ends a command: "\\pi r"
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
    if names & RESERVED_LETTERS:
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
    return not names & RESERVED_LETTERS and _value_at(s, 0, names) is not None


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
            sides.append(s[last : m.start()].strip())  # "\\geq x": the normal form keeps that space
            ops.append(_CANONICAL_OP[tok])
            last = m.end()
    if not ops:
        return None
    sides.append(s[last:].strip())
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
    if names & RESERVED_LETTERS:
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


_NAME = r"(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?'*|[A-Z]{2,4})"
_LABEL_ATOM = (
    rf"(?:{_NAME}|\|{_NAME}\||\\overline\{{{_NAME}\}}|m?\\angle ?{_NAME}"
    r"|[A-Za-z]\([-+]?\d+(?:\.\d+)?\)|[A-Za-z]\([A-Za-z]\))"
)
_LABEL_RE = re.compile(rf"{_LABEL_ATOM}(?::{_LABEL_ATOM})*|\\frac\{{{_LABEL_ATOM}\}}\{{{_LABEL_ATOM}\}}")
"""What names a quantity on the left of ``=``: a variable (``y``, ``S_{ABC}``), a segment or its
length (``AB``, ``|PQ|``, ``\\overline{PQ}``), an angle, a function at a number or a variable
(``g(2)``, ``f(x)``), and ratios or quotients of those (``P:Q``, ``\\frac{AM}{MB}``)."""


def labelled_value(rel: tuple[list[str], list[str]]) -> str | None:
    """The value of ``label = value`` (``g(2)=5`` -> ``5``; ``y=x^2-4x+4`` -> ``x^2-4x+4``), or None
    when the relation is anything else: an equation that constrains (``a+3z=0``, ``7=11a+c``)
    has no value to compare with a bare answer."""
    sides, ops = rel
    if ops != ["="]:
        return None
    label, value = sides
    if not value or _LABEL_RE.fullmatch(label) is None:
        return None
    if any(fn == arg for fn, arg in re.findall(r"([A-Za-z])\(([A-Za-z])\)", label)):
        return None  # "x(x)" is a product, not a function's name
    return value


_LESS = {"<": ")", "<=": "]"}
_LESS_OPEN = {"<": "(", "<=": "["}


def relation_as_interval(rel: tuple[list[str], list[str]]) -> str | None:
    """An inequality in one variable as the interval it describes: ``1<x\\le3`` -> ``(1,3]``,
    ``x>2`` -> ``(2,\\infty)``; None for anything else."""
    sides, ops = rel
    if any(op not in ("<", "<=", ">", ">=") for op in ops) or len(ops) > 2:
        return None
    if ops[0] in _FLIPPED:  # read it the other way round: 3>x>1 is 1<x<3
        if not all(op in _FLIPPED for op in ops):
            return None
        sides, ops = sides[::-1], [_FLIPPED[op] for op in reversed(ops)]
    elif not all(op in _LESS for op in ops):
        return None
    variables = [i for i, side in enumerate(sides) if re.fullmatch(_NAME, side)]
    if len(variables) != 1 or any(_ExprParser.variables(sides[i]) for i in range(len(sides)) if i != variables[0]):
        return None
    at = variables[0]
    low = (_LESS_OPEN[ops[at - 1]], sides[at - 1]) if at > 0 else ("(", "-\\infty")
    high = (sides[at + 1], _LESS[ops[at]]) if at < len(ops) else ("\\infty", ")")
    return f"{low[0]}{low[1]},{high[0]}{high[1]}"
