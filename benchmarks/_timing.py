"""Timing helpers shared by the benchmark scripts.

On a 2-core machine the absolute time of one function drifts by tens of percent between runs
(frequency scaling, other processes), so ratios are measured by interleaving the baseline and the
candidate in rounds and taking the median of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, repeat: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_ratio(
    baseline: Callable[[], object], candidate: Callable[[], object], *, rounds: int = 15, inner: int = 5
) -> tuple[float, float, float]:
    """(median baseline s, median candidate s, median of per-round candidate/baseline ratios)."""
    for _ in range(3):
        baseline()
        candidate()
    base_t, cand_t, ratios = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            baseline()
        t1 = time.perf_counter()
        for _ in range(inner):
            candidate()
        t2 = time.perf_counter()
        b, c = (t1 - t0) / inner, (t2 - t1) / inner
        base_t.append(b)
        cand_t.append(c)
        ratios.append(c / b)
    return statistics.median(base_t), statistics.median(cand_t), statistics.median(ratios)
