"""The normal form of an answer (LaTeX spacing, ``\\left``/``\\right``, ``\\dfrac``, degrees, percent, units,
``x = 3``, thousands separators, choice letters) and exact rationals of plain numbers."""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from sent.grading.limits import CACHE_SIZE, MAX_ANSWER_CHARS, RESERVED_LETTERS

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
_SPACE_RE = re.compile(r"(\\[A-Za-z]+) (?=[A-Za-z])|\s")
"""White space, except the one space that ends a command before a letter (``\\sin x``, ``\\pi r``):
without it the two would fuse into another command, and a brace in its place (``\\sin{}x``) is
a form math-verify does not parse."""
_FONT_RE = re.compile(r"\\(?:mathbf|mathcal|mathit|mathsf|boldsymbol|bm|pmb)\s*\{([^{}]*)\}")
"""Typeface commands, which carry no value: ``\\mathbf{C}`` is ``C``. (``\\mathbb`` is not one of
them: ``\\mathbb{R}`` names the reals.)"""
_PERCENT_RE = re.compile(r"\\%|%")
_LEADING_PHRASE_RE = re.compile(
    r"^\\text\{\s*[A-Za-z' ]*\b(?:is|are|equals)\s*:?\s*\}\s*(?P<rest>\S.*)$", re.IGNORECASE
)
"""A box that opens with the sentence announcing its value: ``\\text{the answer is } 7``."""
_ALTERNATIVES_RE = re.compile(r"\s*(?:\\text\{\s*(?:or|and)\s*\}|\b(?:or|and)\b)\s*")
"""``\\text{ or }`` between the values of one answer: ``x = 2 \\text{ or } x = 5``."""


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
    s = re.sub(r"(?<!\\)\$", "", s)  # stray math delimiters inside: "x+$ $y" (a Minerva gold)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("{,}", "")  # 1{,}000
    s = _SPACING_RE.sub(" ", s)
    # degrees and percent carry no value of their own in these answers
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = _PERCENT_RE.sub("", s)
    s = re.sub(r"^\\?\$\s*", "", s)  # a leading dollar sign: $5 or \$5
    s = s.rstrip(" .")
    s = _FONT_RE.sub(r"\1", s)
    alternatives = _alternatives(s)
    if alternatives is not None:
        return alternatives
    lead = _LEADING_PHRASE_RE.match(s)
    if lead:  # "\text{the answer is } 7": the value after the sentence that announces it
        s = lead.group("rest").strip()
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
    s = _SPACE_RE.sub(lambda m: f"{m.group(1)} " if m.group(1) else "", re.sub(r"\s+", " ", s))
    return s.rstrip(".")


def _alternatives(s: str) -> str | None:
    """``x = 2 \\text{ or } x = 5`` (or ``2 or 5``) as the list ``2,5``: several values joined by
    "or"/"and", each ``var = value`` with one variable throughout, or a value without variables;
    None for anything else ("a and b = 3" names two things)."""
    parts = [p.strip() for p in _ALTERNATIVES_RE.split(s)]
    if len(parts) < 2 or not all(parts):
        return None
    names, values = set(), []
    for part in parts:
        m = _LHS_RE.match(part)
        if m:
            names.add(part.split("=", 1)[0].strip())
            part = m.group("value").strip()
        elif _free_letters(part):
            return None
        values.append(normalize_answer(part))
    if len(names) > 1 or any("," in v or not v for v in values):
        return None  # several variables, or lists within: not one list of values
    return ",".join(values)


def has_percent(answer: str) -> bool:
    """Whether an answer carries a percent sign (`sent.grading.scoring` reads it: the normal form
    drops the sign, and ``0.5\\%`` is not ``\\frac12``)."""
    return _PERCENT_RE.search(answer) is not None


_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?$")
"""At most three exponent digits: ``Fraction("1e999999999")`` would build a billion-digit integer."""
_FRAC_RE = re.compile(r"^(?P<sign>[+-]?)\\frac\{?(?P<p>[+-]?\d+)\}?\{?(?P<q>\d+)\}?$")
_SLASH_RE = re.compile(r"^(?P<p>[+-]?\d+)/(?P<q>\d+)$")
_REPEATING_RE = re.compile(r"^(?P<sign>[+-]?)(?P<whole>\d*)\.(?P<fixed>\d*)\\overline\{?(?P<period>\d+)\}?$")
"""A repeating decimal: ``0.\\overline{3}`` is 1/3, ``0.1\\overline{6}`` is 1/6."""
_MIXED_RE = re.compile(r"^(?P<sign>[+-]?)(?P<whole>\d+)\\frac(?:\{(?P<p>\d+)\}\{(?P<q>\d+)\}|(?P<p1>\d)(?P<q1>\d))$")
"""``3\\frac{1}{2}``, or ``2\\frac14`` (unbraced arguments are one digit each in LaTeX)."""


def _free_letters(s: str) -> set[str]:
    """Latin letters of ``s`` outside LaTeX commands and ``\\text{...}`` (its variables), less the
    letters that usually name constants (``i``, ``e``)."""
    s = _TEXT_CMD_RE.sub("", s)
    return set(re.findall(r"[A-Za-z]", _COMMAND_RE.sub("", s))) - RESERVED_LETTERS


@lru_cache(maxsize=CACHE_SIZE)
def _as_number(s: str) -> Fraction | None:
    """The exact value of a normal form that is a plain number or a numeric fraction."""
    if len(s) > 40:
        return None
    if _DECIMAL_RE.match(s):
        return Fraction(s)
    m = _REPEATING_RE.match(s)
    if m:
        fixed, period = m.group("fixed"), m.group("period")
        value = Fraction(int(m.group("whole") or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
        value += Fraction(int(period), 10 ** len(fixed) * (10 ** len(period) - 1))
        return -value if m.group("sign") == "-" else value
    m = _MIXED_RE.match(s)
    if m:
        p, q = int(m.group("p") or m.group("p1")), int(m.group("q") or m.group("q1"))
        if 0 < p < q:  # a mixed number: 3\frac{1}{2} is 7/2
            value = int(m.group("whole")) + Fraction(p, q)
            return -value if m.group("sign") == "-" else value
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m and int(m.group("q")) != 0:
        value = Fraction(int(m.group("p")), int(m.group("q")))
        return -value if m.groupdict().get("sign") == "-" else value
    return None
