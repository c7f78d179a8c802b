"""Final answers in a response: the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else an
explicit final-answer line ("The final answer is X", "Answer: X", GSM8K's "#### X")."""

from __future__ import annotations

import re

from sent.grading.expr import _compare_by_value
from sent.grading.limits import MAX_RESPONSE_CHARS
from sent.grading.normalize import _as_number, normalize_answer

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
    r"(?:[\s$,;.:]|\\quad|\\qquad|\\text\{\s*(?:(?:or|and)\s*)?\}|\b(?:or|and)\b|\b[A-Za-z]\s*=)*", re.IGNORECASE
)
MAX_HEDGE_GAP = 64
"""What may stand between two boxes of one final answer: ``\\boxed{1}, \\boxed{2} or \\boxed{3}``,
``$x = \\boxed{-3}$ or $x = \\boxed{2}$``."""
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


def _final_group(text: str, boxes: list[Box]) -> list[str]:
    """The contents of the last of ``boxes`` (from `_boxes`, at least one) and of the boxes just
    before it with only spaces, commas, "or"/"and" between them: one final answer, in order."""
    start, _, lo, hi = boxes[-1]
    group = [text[lo:hi].strip()]
    for prev_start, prev_end, prev_lo, prev_hi in reversed(boxes[:-1]):
        if start - prev_end > MAX_HEDGE_GAP or not _HEDGE_GAP_RE.fullmatch(text, prev_end, start):
            break
        group.append(text[prev_lo:prev_hi].strip())
        start = prev_start
    return group[::-1]


def same_value(a: str, b: str) -> bool:
    """Whether two boxes state one value, decided in process: one normal form, one exact number
    (``2\\frac14`` and ``\\frac94``, ``\\frac34`` and ``0.75``) or one value of an expression."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return True
    xa, xb = _as_number(na), _as_number(nb)
    if xa is not None and xb is not None:
        return xa == xb
    return _compare_by_value(na, nb) is True


def _last_box(text: str, boxes: list[Box]) -> str | None:
    """The final answer of the boxes, or None when it is hedged over several boxes with different
    values: a policy must not be rewarded for listing candidates (a list answered box by box is
    read against its reference by `sent.grading.scoring.response_answer`)."""
    group = _final_group(text, boxes)
    answer = group[-1]
    return answer if all(same_value(other, answer) for other in group[:-1]) else None


def extract_answers(text: str) -> list[str]:
    """Every box of the final answer of a response (several when it is given box by box), else
    the one answer `extract_answer` finds, else none."""
    if not isinstance(text, str) or not text:
        return []
    text = text[-MAX_RESPONSE_CHARS:]
    boxes = _boxes(text)
    if boxes:
        group = _final_group(text, boxes)
        distinct: list[str] = []
        for answer in group:
            if not any(same_value(answer, seen) for seen in distinct):
                distinct.append(answer)
        return distinct
    single = extract_answer(text)
    return [] if single is None else [single]


def top_level_items(answer: str) -> list[str]:
    """The items of a bare list answer (``2, -3``: commas outside brackets and braces), one item
    for anything else."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(answer):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(answer[start:i])
            start = i + 1
    items.append(answer[start:])
    return [item.strip() for item in items if item.strip()]


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
