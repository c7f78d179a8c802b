"""What the local engine measures of a step besides the losses' own metrics: seconds per phase
(`PhaseClock`), the mean token entropy (`EntropyTally`) and entropy collapse (`EntropyWatch`), and
which metrics are wall-clock (`is_timing`: those differ between two runs of the same seed)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

TIME_PREFIX = "time/"
"""Per-phase seconds of a step: ``time/generate``, ``time/scoring``, ``time/batching``,
``time/old_logprobs``, ``time/forward`` (policy forward, entropy and loss), ``time/backward`` and
``time/optimizer`` (clipping and the AdamW step)."""
TIMING = frozenset({"step_time", "sampling_time", "tokens_per_s"})
"""Wall-clock metrics: with those under `TIME_PREFIX`, the ones that differ between two runs of
the same seed."""


def is_timing(metric: str) -> bool:
    return metric in TIMING or metric.startswith(TIME_PREFIX)


class PhaseClock:
    """Seconds spent per named phase, summed over a step (``with clock("forward"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class EntropyTally:
    """The mean token entropy over every response token of a step (``policy_entropy``)."""

    total: float = 0.0
    tokens: int = 0

    def add(self, entropy: torch.Tensor, valid: torch.Tensor) -> None:
        self.total += float((entropy.detach() * valid).sum())
        self.tokens += int(valid.sum())

    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else float("nan")


@dataclass
class EntropyWatch:
    """Entropy collapse: the policy entropy falls below ``fraction`` of its start value. The start
    is the first finite value (a step whose groups all lack signal has no entropy)."""

    fraction: float
    start: float | None = None
    warned: bool = False

    def update(self, entropy: float) -> tuple[bool, bool]:
        """(collapsed now, first collapse: warn) for one step's entropy."""
        if not math.isfinite(entropy):
            return False, False
        if self.start is None:
            self.start = entropy
        collapsed = entropy < self.fraction * self.start
        first = collapsed and not self.warned
        self.warned |= collapsed
        return collapsed, first
