"""Child process that runs math-verify's symbolic comparison for `sent.grading.verify`.

Why a process: sympy can take unbounded time on adversarial answers (``9^{9^{9^{9}}}``), and
math-verify's own timeouts use ``signal.alarm``, which only works on the main thread (it raises
from Prefect's and verl's worker threads). A separate process can always be killed, from any
thread. The parent (`sent.grading.verify._VerifierPool`) enforces the deadline; this loop only answers.

Protocol: one JSON object per line on stdin, ``{"a": str, "b": str}``; one JSON object per line on
stdout, ``{"eq": bool}``. The process exits when stdin closes.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import lru_cache

PARSE_CACHE_SIZE = 65536


def _load():
    # math-verify logs a warning on every call when its own (signal-based) timeout is disabled;
    # here the parent owns the deadline, so that warning is noise.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import sympy
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    extraction = [LatexExtractionConfig(), ExprExtractionConfig()]

    @lru_cache(maxsize=PARSE_CACHE_SIZE)
    def parsed(answer: str):
        # Answers arrive already extracted (no surrounding prose), so wrap them as inline maths
        # for the LaTeX extractor; the plain-expression extractor catches the rest.
        result = parse(f"${answer}$", extraction_config=extraction, parsing_timeout=None)
        if not result:
            result = parse(answer, extraction_config=extraction, parsing_timeout=None)
        return result

    def plain(p) -> bool:
        # verify(gold, target) is only asymmetric when sets, intervals, tuples or relations are
        # involved (a gold set against a listed target, "x = 3" against "3"); plain expressions
        # compare the same both ways.
        return isinstance(p[0], sympy.Expr)

    def equivalent(a: str, b: str) -> bool:
        pa, pb = parsed(a), parsed(b)
        if not pa or not pb:
            return False
        if verify(pa, pb, timeout_seconds=None):
            return True
        # the symmetric closure, where the second direction can differ
        return not (plain(pa) and plain(pb)) and bool(verify(pb, pa, timeout_seconds=None))

    return equivalent


def main() -> None:
    equivalent = _load()
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            eq = equivalent(req["a"], req["b"])
        except Exception:
            eq = False
        out.write(json.dumps({"eq": eq}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
