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
WORKER_STARTUP_TIMEOUT_S = 120.0
"""How long the first call waits for the verifier process to import sympy and math-verify."""
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

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_FINAL_RES = (
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE),
    re.compile(r"^[ \t*#_>-]*answer[ \t*_]*[:：][ \t]*(?P<ans>[^\n]+)$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^[ \t]*####[ \t]*(?P<ans>[^\n]+)$", re.MULTILINE),
    re.compile(r"(?:^|(?<=[.!:]\s))the\s+answer\s+is\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE | re.MULTILINE),
)
_INLINE_MATH_RE = re.compile(r"^\$+([^$]+)\$+")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _braced_group(text: str, pos: int) -> str | None:
    """Content of the ``{...}`` group starting at ``pos`` (after optional spaces), or of the bare
    token for ``\\boxed 5``; ``None`` when the braces never close (a truncated response)."""
    n = len(text)
    while pos < n and text[pos] in " \t":
        pos += 1
    if pos >= n:
        return None
    if text[pos] != "{":
        m = re.match(r"[^\s$]+", text[pos:])
        return m.group(0) if m else None
    depth, i, start = 0, pos, pos + 1
    while i < n:
        c = text[i]
        if c == "\\":  # an escaped brace \{ or \} does not open or close a group
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


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


def extract_answer(text: str) -> str | None:
    """The final answer of a response, or ``None`` when it states none.

    The content of the last ``\\boxed{...}``/``\\fbox{...}`` whose braces balance (nested braces,
    ``\\boxed {x}`` and ``\\boxed 5`` included); an unclosed box (a truncated response) is skipped.
    Without a box, the last explicit final-answer line.
    """
    if not isinstance(text, str) or not text:
        return None
    for m in reversed(list(_BOX_RE.finditer(text))):
        content = _braced_group(text, m.end())
        if content is not None and content.strip():
            return content.strip()
    best: tuple[int, str] | None = None
    for pattern in _FINAL_RES:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group("ans"))
    if best is None:
        return None
    ans = best[1]
    # "Final Answer: The final answer is $3$." -- matches do not overlap, so look inside once more
    if _BOX_RE.search(ans) or any(p.search(ans) for p in _FINAL_RES):
        inner = extract_answer(ans)
        if inner is not None:
            return inner
    return _clean_final_line(ans)


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
_LHS_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*(?P<rhs>[^=]+)$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)$|^\(([A-Ea-e])\)?$")
_PLAIN_TEXT_RE = re.compile(r"^[A-Za-z][A-Za-z' ]*$")
_SPACING_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~")  # not the LaTeX row break "\\"
_CMD_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


@lru_cache(maxsize=CACHE_SIZE)
def normalize_answer(answer: str) -> str:
    """A canonical spelling of an answer; two answers with equal normal forms are equivalent.

    Keeps the result valid LaTeX, so it can still be handed to the symbolic checker.
    """
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
    else:
        m = re.match(r"^(?P<head>.*?\S)\s*" + _TEXT_CMD_RE.pattern + r"$", s)
        if m and re.fullmatch(r"[+-]?[\d.,/]+|\\frac\{\d+\}\{\d+\}", m.group("head").strip()):
            s = m.group("head").strip()
    m = _LHS_RE.match(s)
    if m:
        s = m.group("rhs").strip()
    m = _NUMBER_WITH_UNIT_RE.match(s)
    if m:
        s = m.group("num")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _CHOICE_RE.match(s)
    if m:
        s = (m.group(1) or m.group(2)).upper()
    s = _CMD_SPACE_RE.sub(r"\1{}", s)  # keep "\pi r" from fusing into "\pir"
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_FRAC_RE = re.compile(r"^(?P<sign>[+-]?)\\frac\{?(?P<p>[+-]?\d+)\}?\{?(?P<q>\d+)\}?$")
_SLASH_RE = re.compile(r"^(?P<p>[+-]?\d+)/(?P<q>\d+)$")


@lru_cache(maxsize=CACHE_SIZE)
def _as_number(s: str) -> Fraction | None:
    """The exact value of a normal form that is a plain number or a numeric fraction."""
    if len(s) > 40:
        return None
    if _DECIMAL_RE.match(s):
        return Fraction(s)
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
# The symbolic tier: math-verify in killable child processes
# --------------------------------------------------------------------------------------------


class _Worker:
    """One `sent._verify_worker` process and its pipes."""

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
        ready = self._read_line(time.monotonic() + WORKER_STARTUP_TIMEOUT_S)
        if ready is None:
            self.kill()
            raise RuntimeError("the math-verify worker did not start")

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
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, a: str, b: str, timeout: float) -> bool | None:
        """True/False, or None when the worker did not answer within ``timeout`` seconds."""
        self.proc.stdin.write((json.dumps({"a": a, "b": b}) + "\n").encode())
        reply = self._read_line(time.monotonic() + timeout)
        return None if reply is None else bool(reply.get("eq"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass


class _VerifierPool:
    """A few verifier processes shared by all threads of this process.

    A call borrows an idle worker (starting it on first use), and kills it when it overruns its
    deadline; the next call starts a fresh one. After ``fork`` (Ray, DataLoader workers) the child
    builds its own pool instead of sharing the parent's pipes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pid = os.getpid()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failed = False

    def equivalent(self, a: str, b: str, timeout: float) -> bool | None:
        try:
            worker = self._idle.get(timeout=timeout)
        except queue.Empty:
            logger.warning("no verifier free within %.1fs; comparing %r and %r by normal form", timeout, a, b)
            return None
        try:
            if worker is None or not worker.alive():
                if self._start_failed:
                    return None
                try:
                    worker = _Worker()
                except Exception as exc:
                    self._start_failed = True
                    logger.error("cannot start the math-verify worker (%s); symbolic checks are off", exc)
                    return None
                with self._lock:
                    self._all.append(worker)
            result = worker.ask(a, b, timeout)
            if result is None:
                logger.warning("symbolic check of %r vs %r exceeded %.1fs; treated as not equivalent", a, b, timeout)
                worker.kill()
                worker = None
            return result
        except Exception as exc:
            logger.warning("verifier failed on %r vs %r: %s", a, b, exc)
            if worker is not None:
                worker.kill()
            worker = None
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


@lru_cache(maxsize=CACHE_SIZE)
def _symbolic_equivalent(a: str, b: str, timeout: float) -> bool:
    # Called with (a, b) in sorted order so that the cache and the result are symmetric.
    result = _get_pool().equivalent(a, b, timeout)
    return bool(result)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def is_equivalent(a: str | None, b: str | None, *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two final answers are mathematically equivalent.

    Symmetric, never raises, bounded by ``timeout`` seconds of symbolic work per call, and safe
    to call from any thread. ``None`` or empty answers are equivalent to nothing.
    """
    try:
        if a is None or b is None:
            return False
        na, nb = normalize_answer(str(a)), normalize_answer(str(b))
        if not na or not nb:
            return False
        if na == nb:
            return True
        xa, xb = _as_number(na), _as_number(nb)
        if xa is not None and xb is not None:
            return xa == xb
        if _PLAIN_TEXT_RE.match(na) and _PLAIN_TEXT_RE.match(nb) and (len(na) > 1 or len(nb) > 1):
            # words ("Monday", "even"): no maths to compare beyond the spelling
            return na.casefold() == nb.casefold()
        la, lb = _bracketed_items(na), _bracketed_items(nb)
        if la is not None and lb is not None:
            # tuples and intervals: same brackets, same length, equivalent items in order
            return (
                la[0] == lb[0]
                and la[2] == lb[2]
                and len(la[1]) == len(lb[1])
                and all(is_equivalent(x, y, timeout=timeout) for x, y in zip(la[1], lb[1], strict=True))
            )
        by_value = _compare_by_value(na, nb)
        if by_value is not None:
            # constants (\\sqrt{8} vs 2\\sqrt{2}) and expressions (2x+5 vs 5+2x): values decide
            return by_value
        if (la is None) != (lb is None) and (_is_arithmetic(na) or _is_arithmetic(nb)):
            return False  # a tuple or interval is never a scalar expression
        if max(len(na), len(nb)) > MAX_SYMBOLIC_CHARS or max(_brace_depth(na), _brace_depth(nb)) > MAX_BRACE_DEPTH:
            return False
        lo, hi = sorted((na, nb))
        return _symbolic_equivalent(lo, hi, float(timeout))
    except Exception as exc:
        logger.warning("is_equivalent(%r, %r) failed: %s", a, b, exc)
        return False


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


def grade(response: str, ground_truth: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the final answer of ``response`` matches ``ground_truth`` (any of several)."""
    return _matches(extract_answer(response), ground_truth, timeout)


def _matches(pred: str | None, ground_truth: str | Sequence[str], timeout: float) -> bool:
    return pred is not None and any(is_equivalent(pred, gt, timeout=timeout) for gt in _ground_truths(ground_truth))


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

    Returns ``{"score", "acc", "pred"}``: +1/-1 by default as in the paper's scripts; set
    ``correct_score``/``incorrect_score`` (verl: ``reward_kwargs``) for 1/0. ``data_source`` and
    ``extra_info`` are accepted for verl's calling convention; every source is graded as maths.
    """
    del data_source, extra_info
    pred = extract_answer(solution_str)
    acc = _matches(pred, ground_truth, timeout)
    return {"score": float(correct_score if acc else incorrect_score), "acc": bool(acc), "pred": pred}
