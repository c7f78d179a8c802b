"""The grader under hostile model output: the worst time of one call, against its bound.

The grader runs on every response of curation, training and evaluation, on text that a policy
under optimisation writes; a response that stalls it stalls a training step. This benchmark
generates a corpus of hostile answers (repeated or unbalanced braces, power towers, 1 MB strings,
deep ``\\frac``, many ``=`` signs, unicode look-alikes, long hedges) and times, for each:

- ``extract_answer`` on the response (no bound of its own: it must be linear and fast);
- ``compute_score`` against a reference, with ``timeout = BOUND`` (one budget per response);
- ``score_answers`` on eight hostile answers of one problem, with ``budget_s = BOUND``.

Target (issue 10): the worst call stays <= BOUND + 0.5 s on an idle machine, and <= 2 x BOUND while
a second process keeps one core busy (``--load``, or the second pass of a plain run). Run alone.

    python benchmarks/bench_grader_adversarial.py [--bound 5] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from sent.rewards import compute_score, extract_answer, warm_up_verifier
from sent.semantic import get_judge, score_answers


def hostile_answers() -> dict[str, str]:
    """Final answers a degenerate or adversarial policy can write, by name."""
    mb = 1 << 20
    return {
        "tower-10": "10^{10^{10^{10^{10}}}}",
        "tower-9": "9^{9^{9^{9}}}",
        "tower-unbalanced": "10^{10^{10^{10^{10}}}",
        "factorial-tower": "(10!)!^{(10!)!}",
        "deep-frac": "\\frac{1}{" * 200 + "2" + "}" * 200,
        "deep-sqrt": "\\sqrt{" * 300 + "2" + "}" * 300,
        "deep-parens": "(" * 2000 + "1" + ")" * 2000,
        "many-equals": "=".join(["x"] * 5000),
        "equation-chain": "=".join(f"{k}x+{k}" for k in range(300)),
        "braces-only": "{" * 50_000 + "}" * 50_000,
        "unbalanced-braces": "{" * 100_000,
        "one-megabyte-digits": "7" * mb,
        "one-megabyte-text": "a" * mb,
        "one-megabyte-spaces": "1" + " " * mb + "2",
        "unicode-lookalikes": "１２３ − ٣ ＝ ⁴²  𝟙𝟚𝟛 ∞ √２",
        "huge-integer": "9" * 5000,
        "huge-exponent-float": "1e999999999",
        "matrix": "\\begin{pmatrix}"
        + "\\\\".join("&".join("x" for _ in range(40)) for _ in range(40))
        + "\\end{pmatrix}",
        "long-polynomial": "+".join(f"{k}x^{{{k}}}" for k in range(400)),
        "text-hedge": " \\text{ or } ".join(str(k) for k in range(2000)),
        "set-of-all": "\\{" + ",".join(str(k) for k in range(5000)) + "\\}",
        "integral": "\\int_0^{\\infty} e^{-x^{x^{x}}} \\, dx",
        "sum-to-infinity": "\\sum_{n=1}^{\\infty} \\frac{1}{n^{n^{n}}}",
    }


def hostile_responses(answers: dict[str, str]) -> dict[str, str]:
    """Whole responses: the answers boxed, plus what attacks extraction itself."""
    out = {f"boxed:{k}": f"Thus \\boxed{{{v}}}." for k, v in answers.items()}
    out.update(
        {
            "repeated-unclosed-box-10k": "\\boxed{" * 10_000,  # 54 s before the linear extractor
            "repeated-unclosed-box-100k": "\\boxed{" * 100_000,
            "boxes-100k": "\\boxed{1}" * 100_000,
            "final-answer-phrase-x20k": "The final answer is " * 20_000 + "5",
            "answer-lines-100k": "Answer: 1\n" * 100_000,
            "escaped-braces-1m": "\\{" * 500_000,
            "one-megabyte-line": "x" * (1 << 20),
        }
    )
    return out


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def run(bound: float, quick: bool) -> dict[str, float]:
    answers = hostile_answers()
    responses = hostile_responses(answers)
    if quick:
        answers = dict(list(answers.items())[:8])
        responses = {k: v for k, v in responses.items() if not k.startswith("boxed:")} | {
            f"boxed:{k}": f"\\boxed{{{v}}}" for k, v in answers.items()
        }
    warm_up_verifier()
    time.sleep(3)  # the verifiers' start-up is not what is measured
    judge = get_judge("math", timeout=bound)
    worst: dict[str, tuple[float, str]] = {}

    def record(kind: str, name: str, seconds: float) -> None:
        if seconds > worst.get(kind, (0.0, ""))[0]:
            worst[kind] = (seconds, name)

    for name, text in responses.items():
        record("extract_answer", name, _timed(lambda text=text: extract_answer(text))[0])
        for gold in ("-3", "\\frac{1}{2}", "x+1"):  # none of them is a hostile answer
            seconds, result = _timed(lambda text=text, gold=gold: compute_score(None, text, gold, timeout=bound))
            assert result["acc"] is False, (name, gold)
            record("compute_score", f"{name} vs {gold}", seconds)
    names = list(answers)
    undecided = 0
    for i in range(0, len(names), 8):
        group = [answers[n] for n in names[i : i + 8]]
        seconds, score = _timed(lambda group=group: score_answers(group, equivalent=judge, budget_s=bound))
        undecided += score.undecided
        record("score_answers (8 answers)", ",".join(names[i : i + 8]), seconds)
    n_calls = len(responses) * 4 + -(-len(names) // 8)
    print(f"  {len(answers)} hostile answers, {len(responses)} hostile responses, {n_calls} timed calls")
    print(f"  comparisons left undecided by the problem budget: {undecided}")
    for kind, (seconds, name) in worst.items():
        print(f"  worst {kind:28s} {seconds:7.3f} s  ({name[:70]})")
    return {kind: seconds for kind, (seconds, _) in worst.items()}


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bound", type=float, default=5.0, help="compute_score timeout and SE budget (s)")
    parser.add_argument("--quick", action="store_true", help="a smaller corpus")
    parser.add_argument("--load", action="store_true", help="only the pass under a second process's load")
    args = parser.parse_args()
    passes = [True] if args.load else [False, True]
    for loaded in passes:
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,), daemon=True) if loaded else None
        if burner is not None:
            burner.start()
        try:
            print(f"{'under a second process' if loaded else 'idle machine'} (bound {args.bound:.1f} s):")
            worst = run(args.bound, args.quick)
        finally:
            stop.set()
            if burner is not None:
                burner.join()
        limit = 2 * args.bound if loaded else args.bound + 0.5
        verdict = "OK" if max(worst.values()) <= limit else "OVER"
        print(f"  worst call {max(worst.values()):.3f} s; limit {limit:.1f} s: {verdict}")


if __name__ == "__main__":
    main()
