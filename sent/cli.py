"""The ``sent`` command line. Phases (curate, train, eval) join as their issues land."""

from __future__ import annotations

import argparse
import json
import sys

from sent import __version__


def _cmd_grade(args: argparse.Namespace) -> int:
    from sent.rewards import compute_score

    response = sys.stdin.read() if args.response == "-" else args.response
    result = compute_score(
        None, response, args.answer, correct_score=1.0, incorrect_score=args.incorrect_score
    )
    print(json.dumps(result))
    return 0 if result["acc"] else 1


def _cmd_se(args: argparse.Namespace) -> int:
    from sent.semantic import score_answers

    answers = [None if a == "" else a for a in args.answers]
    score = score_answers(answers, pool_missing=args.pool_missing)
    print(json.dumps({"classes": score.cluster_ids, "n_classes": score.n_classes, "entropy": score.entropy}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    grade = sub.add_parser("grade", help="grade one response against a reference answer (exit 0 iff correct)")
    grade.add_argument("--response", required=True, help="the response text, or - to read it from stdin")
    grade.add_argument("--answer", required=True, help="the reference answer")
    grade.add_argument(
        "--incorrect-score", type=float, default=-1.0, help="score of a wrong answer (-1 or 0)"
    )
    grade.set_defaults(func=_cmd_grade)

    se = sub.add_parser("se", help="semantic entropy of a list of final answers ('' = no answer)")
    se.add_argument("answers", nargs="+")
    se.add_argument("--pool-missing", action="store_true", help="missing answers form one class")
    se.set_defaults(func=_cmd_se)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
