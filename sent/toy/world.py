"""Arithmetic problems with graded difficulty, deterministic from a seed.

A level fixes the number of operands, their digits, the operators and how often parentheses
appear. The default ladder is the one that a ~1M-parameter model climbs in minutes on 2 cores
(TOY_NOTES.md): L1 = 2 x 1 digit, L2 = 3 x 1 digit, L3 = 2 x 2 digits, L4 = 3 x 2 digits,
L5 = 2 x 3 digits, with + and -. Worked solutions evaluate one operation at a time
(inner parentheses first) and end in ``\\boxed{answer}``: ``37+62=99, 99-45=54. \\boxed{54}``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Level:
    operands: int
    digits: int
    operators: str = "+-"
    paren_prob: float = 0.0
    """Chance that a problem with >= 3 operands groups its last two: a-(b+c)."""


DEFAULT_LEVELS: tuple[Level, ...] = (Level(2, 1), Level(3, 1), Level(2, 2), Level(3, 2), Level(2, 3))


def level_space(level: Level) -> int:
    """How many distinct problems a level has (without parentheses)."""
    values = 10 if level.digits == 1 else 9 * 10 ** (level.digits - 1)
    return values**level.operands * len(level.operators) ** (level.operands - 1)


@dataclass(frozen=True)
class ToyProblem:
    id: str
    problem: str
    answer: str
    solution: str
    level: int

    def row(self) -> dict:
        return {
            "id": self.id,
            "problem": self.problem,
            "answer": self.answer,
            "solution": self.solution,
            "level": self.level,
        }


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def make_problem(rng: random.Random, level: Level, level_no: int, index: int, split: str = "train") -> ToyProblem:
    lo = 0 if level.digits == 1 else 10 ** (level.digits - 1)
    nums = [rng.randint(lo, 10**level.digits - 1) for _ in range(level.operands)]
    ops = [rng.choice(level.operators) for _ in range(level.operands - 1)]
    grouped = level.operands >= 3 and rng.random() < level.paren_prob
    steps = []
    if grouped:  # a op0 (b op1 c): the group first
        inner = _apply(nums[-2], ops[-1], nums[-1])
        steps.append(f"{nums[-2]}{ops[-1]}{nums[-1]}={inner}")
        head = "".join(f"{n}{o}" for n, o in zip(nums[:-2], ops[:-1], strict=True))
        expr = f"{head}({nums[-2]}{ops[-1]}{nums[-1]})"
        value = nums[0]
        rest = [*zip(ops[:-2], nums[1:-2], strict=True), (ops[-2], inner)]
    else:
        expr = str(nums[0]) + "".join(f"{o}{n}" for o, n in zip(ops, nums[1:], strict=True))
        value = nums[0]
        rest = list(zip(ops, nums[1:], strict=True))
    for op, n in rest:
        new = _apply(value, op, n)
        steps.append(f"{value}{op}{n}={new}")
        value = new
    solution = ", ".join(steps) + f". \\boxed{{{value}}}"
    return ToyProblem(f"toy-{split}-L{level_no}-{index:06d}", f"Compute {expr}.", str(value), solution, level_no)


def generate_split(
    seed: int,
    per_level: int | Sequence[int],
    levels: Sequence[Level] = DEFAULT_LEVELS,
    *,
    exclude: set[str] | None = None,
    split: str = "train",
) -> list[ToyProblem]:
    """``per_level`` distinct problems of every level (a number, or one per level; fewer when a
    level has fewer distinct problems outside ``exclude``), deterministic from ``seed``."""
    rng = random.Random(seed)
    exclude = exclude or set()
    counts = [per_level] * len(levels) if isinstance(per_level, int) else list(per_level)
    out: list[ToyProblem] = []
    for level_no, (level, wanted) in enumerate(zip(levels, counts, strict=True), start=1):
        seen: set[str] = set()
        attempts = 0
        while len(seen) < wanted and attempts < wanted * 50:
            attempts += 1
            p = make_problem(rng, level, level_no, len(seen), split)
            if p.problem in seen or p.problem in exclude:
                continue
            seen.add(p.problem)
            out.append(p)
    return out


def generate_world(
    seed: int, train_per_level: int, test_per_level: int, levels: Sequence[Level] = DEFAULT_LEVELS
) -> tuple[list[ToyProblem], list[ToyProblem]]:
    """(train, test): the test split is drawn first, from at most a quarter of each level's
    distinct problems (L1 has only 200), and train never repeats a test problem."""
    test_counts = [min(test_per_level, level_space(lv) // 4) for lv in levels]
    test = generate_split(seed * 2 + 1, test_counts, levels, split="test")
    train_counts = [min(train_per_level, level_space(lv) - t) for lv, t in zip(levels, test_counts, strict=True)]
    train = generate_split(seed * 2, train_counts, levels, exclude={p.problem for p in test}, split="train")
    # levels interleaved, so that any prefix (`--limit`, data.limit) is a fair sample
    random.Random(seed).shuffle(train)
    random.Random(seed + 1).shuffle(test)
    return train, test


def write_jsonl(problems: Sequence[ToyProblem], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.row()) + "\n")
    tmp.replace(path)
    return path
