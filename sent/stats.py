"""Paired comparisons of two evaluations on the same problems (a trained model against its start).

Both evaluations sample every problem n times; a problem's score is its avg@n in points (100 x
the share of correct samples). The difference of two models is taken per problem, so what
the problems have in common (their difficulty) cancels: mean difference ``d``, standard error
``sd(d_i) / sqrt(m)`` over the m problems, and a two-sided Student-t interval with m - 1 degrees
of freedom. Groups are the benchmark's levels where its JSONL has a ``level`` field (the toy
world, MATH500; `sent.evaluation.benchmark_levels`), each benchmark otherwise, the levels a run
trained on, and all problems.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """``final - base`` over the problems of one group, in avg@n points."""

    group: str
    problems: int
    base: float
    final: float
    difference: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def paired_difference(
    base: Sequence[float], final: Sequence[float], *, group: str = "all", confidence: float = 0.95
) -> PairedDifference:
    """The mean of ``final[i] - base[i]`` with its Student-t interval (NaN bounds for one problem)."""
    from scipy import stats

    a, b = np.asarray(base, dtype=np.float64), np.asarray(final, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores need two equal, non-empty lists; got {a.shape} and {b.shape}")
    d = b - a
    mean = float(d.mean())
    if len(d) > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    else:
        half = float("nan")
    return PairedDifference(group, len(d), float(a.mean()), float(b.mean()), mean, mean - half, mean + half, confidence)


def problem_scores(details_path: str | Path) -> dict[tuple[str, str], float]:
    """``{(benchmark, problem id): avg@n in points}`` from an evaluation's ``details.parquet``."""
    import polars as pl

    per_problem = (
        pl.read_parquet(details_path)
        .group_by("benchmark", "id")
        .agg(pl.col("correct").cast(pl.Float64).mean().alias("score"))
    )
    return {(r["benchmark"], r["id"]): 100.0 * r["score"] for r in per_problem.iter_rows(named=True)}


def problem_counts(details_path: str | Path) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(benchmark, problem id): (correct samples, samples)}`` from an evaluation's
    ``details.parquet``: what avg@n and every pass@k of a problem are computed from."""
    import polars as pl

    per_problem = (
        pl.read_parquet(details_path)
        .group_by("benchmark", "id")
        .agg(pl.col("correct").cast(pl.Int64).sum().alias("c"), pl.len().alias("n"))
    )
    return {(r["benchmark"], r["id"]): (int(r["c"]), int(r["n"])) for r in per_problem.iter_rows(named=True)}


def problem_spread(details_path: str | Path) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(benchmark, problem id): (semantic entropy of its answers, distinct answers)}`` from an
    evaluation's ``details.parquet`` (`sent.evaluation.AnswerSpread`)."""
    import polars as pl

    from sent.evaluation import AnswerSpread

    rows = pl.read_parquet(details_path).sort("benchmark", "id", "sample")
    out = {}
    for (bench, pid), group in rows.group_by("benchmark", "id", maintain_order=True):
        spread = AnswerSpread.of(group["answer"].to_list())
        out[(str(bench), str(pid))] = (spread.entropy, spread.distinct)
    return out


def compare_evaluations(
    base: Mapping[tuple[str, str], float],
    final: Mapping[tuple[str, str], float],
    *,
    levels: Mapping[str, Mapping[str, str]] | None = None,
    trained: Collection[str] = (),
    confidence: float = 0.95,
) -> list[PairedDifference]:
    """Paired differences per group, on the problems both evaluations scored.

    ``levels`` maps a benchmark to its ``{id: level}``; ``trained`` names the groups a run trained
    on (e.g. ``{"toy L1", "toy L2", "toy L3"}``), pooled as one more group. The last row is all
    problems.
    """
    keys = sorted(set(base) & set(final))
    if not keys:
        raise ValueError("the two evaluations share no problem: nothing to compare")
    levels = levels or {}

    def group_of(key: tuple[str, str]) -> str:
        bench, pid = key
        level = levels.get(bench, {}).get(pid)
        return f"{bench} {level}" if level else bench

    groups: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        groups.setdefault(group_of(key), []).append(key)
    rows = [
        paired_difference([base[k] for k in ks], [final[k] for k in ks], group=name, confidence=confidence)
        for name, ks in sorted(groups.items())
    ]
    chosen = [k for k in keys if group_of(k) in set(trained)]
    if chosen and len(chosen) < len(keys):
        label = f"trained: {', '.join(sorted(set(trained) & set(groups)))}"
        rows.append(
            paired_difference([base[k] for k in chosen], [final[k] for k in chosen], group=label, confidence=confidence)
        )
    rows.append(
        paired_difference([base[k] for k in keys], [final[k] for k in keys], group="all", confidence=confidence)
    )
    return rows


def comparison_markdown(rows: Sequence[PairedDifference], metric: str = "avg@n") -> str:
    pct = round(100 * rows[0].confidence) if rows else 95
    lines = [
        f"| group | problems | start {metric} | trained {metric} | difference | {pct} % CI (paired t) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = "" if r.excludes_zero else " (includes 0)"
        lines.append(
            f"| {r.group} | {r.problems} | {r.base:.2f} | {r.final:.2f} | {r.difference:+.2f} | "
            f"{r.ci_low:+.2f} … {r.ci_high:+.2f}{mark} |"
        )
    return "\n".join(lines)


def comparison_json(rows: Sequence[PairedDifference]) -> list[dict]:
    return [{**asdict(r), "excludes_zero": r.excludes_zero} for r in rows]


@dataclass(frozen=True)
class Interval:
    """The mean of replicate values (e.g. one metric over seeds) with its Student-t interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Mean ± the two-sided Student-t interval with n - 1 degrees of freedom (NaN bounds for one value)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not len(x):
        raise ValueError(f"an interval needs a non-empty list of values; got shape {x.shape}")
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, float("nan"), float("nan"), 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x), confidence)


def pooled_paired_difference(
    reference: Mapping[int, Mapping[tuple[str, str], float]],
    arm: Mapping[int, Mapping[tuple[str, str], float]],
    *,
    keys: Collection[tuple[str, str]] | None = None,
    group: str = "all",
    confidence: float = 0.95,
) -> PairedDifference:
    """``arm - reference`` per problem, pooled over the seeds both have.

    ``reference`` and ``arm`` map a seed to ``{(benchmark, id): score}``. With common random
    numbers (the same seed trains both and the same sampling seeds evaluate them), a problem's
    difference is its mean over the shared seeds; the Student-t interval is then taken over
    problems, the independent unit (a problem's seeds are not independent of each other: they
    share its difficulty). ``keys`` restricts the problems (a level, the trained levels)."""
    seeds = sorted(set(reference) & set(arm))
    if not seeds:
        raise ValueError("the reference and the arm share no seed: nothing to pair")
    shared = set.intersection(*(set(reference[s]) & set(arm[s]) for s in seeds))
    if keys is not None:
        shared &= set(keys)
    problems = sorted(shared)
    if not problems:
        raise ValueError(f"group {group!r}: no problem scored in every shared seed")
    ref = [float(np.mean([reference[s][k] for s in seeds])) for k in problems]
    other = [float(np.mean([arm[s][k] for s in seeds])) for k in problems]
    return paired_difference(ref, other, group=group, confidence=confidence)
