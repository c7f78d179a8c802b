"""Final answers and their grading: the reward of training and the judge of semantic clustering.

What is built (METHOD.md §1, §4):
- `extract_answer`: the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else an explicit
  final-answer line ("The final answer is X", "Answer: X", GSM8K's "#### X").
- `is_equivalent`: mathematical equivalence of two answers, in three tiers:
  1. a normal form (`normalize_answer`): LaTeX spacing, ``\\left``/``\\right``, ``\\dfrac``, degrees,
     percent, units in ``\\text{}``, ``x = 3``, thousands separators, choice letters; equal normal
     forms are equivalent;
  2. exact rational comparison when both sides are plain numbers or ``\\frac{p}{q}``;
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
_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
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
                logger.warning(
                    "symbolic check of %r vs %r exceeded %.1fs; treated as not equivalent", a, b, timeout
                )
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
        if (
            max(len(na), len(nb)) > MAX_SYMBOLIC_CHARS
            or max(_brace_depth(na), _brace_depth(nb)) > MAX_BRACE_DEPTH
        ):
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
    return [extract_answer(g) or g if "\\boxed" in g or "\\fbox" in g else g for g in values]


def grade(response: str, ground_truth: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the final answer of ``response`` matches ``ground_truth`` (any of several)."""
    return _matches(extract_answer(response), ground_truth, timeout)


def _matches(pred: str | None, ground_truth: str | Sequence[str], timeout: float) -> bool:
    return pred is not None and any(
        is_equivalent(pred, gt, timeout=timeout) for gt in _ground_truths(ground_truth)
    )


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
