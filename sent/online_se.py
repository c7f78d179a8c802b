"""Online semantic entropy: the SE of each problem's G training rollouts, and the epoch order it
gives a stage under ``curriculum.mode: online``.

Every GRPO step already samples G answers per problem. Clustered with curation's judge and
function (`sent.semantic.configured_judge`, `score_answers`), they give the problem's SE under the
current policy at no sampling cost: a curation for free, at most one epoch old.

`OnlineOrder` holds a stage's row order:
- The first epoch is the static one (the run seed's permutation, or the stage's own order without
  ``training.shuffle``), so an online stage trains the same rows as a static one until it ends.
- Each later epoch is decided when the first batch that reaches into it is built: the rows sorted
  by their latest SE, low first (the online SE of their last rollout, or the curation's SE for a
  row not yet seen), ties kept in that epoch's static order.
- With ``online_filter``, an epoch leaves out the rows whose latest SE is 0 (all G answers
  equivalent, so all rewards equal: no GRPO signal), for that epoch only: a row left out of one
  epoch is in the next and measured again, and an epoch keeps at least one batch. Epochs then get
  shorter and the stage, whose step count is fixed, passes more often over the rows that train.

Everything that decides the order is in `state` and the history, so a stage resumed from a
checkpoint goes on with the same order and history as one never stopped. The history is kept
as Parquet (`HISTORY_FILE`, `HISTORY_SCHEMA`): one row per problem per step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sent.data_contract import write_table
from sent.rewards import extract_answer
from sent.semantic import Judge, score_answers

if TYPE_CHECKING:
    from sent.config import SemanticConfig

logger = logging.getLogger(__name__)
HISTORY_FILE = "online_se.parquet"
HISTORY_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64(), nullable=False),  # the step whose rollouts these are (1-based, as metrics.jsonl)
        pa.field("epoch", pa.int64(), nullable=False),  # the epoch of the row's place in the order (1-based)
        pa.field("row", pa.int64(), nullable=False),  # the problem's row in the stage
        pa.field("id", pa.string(), nullable=False),
        pa.field("semantic_entropy", pa.float64(), nullable=False),
        pa.field("n_classes", pa.int32(), nullable=False),
        pa.field("pass_rate", pa.float64(), nullable=False),
        pa.field("se_undecided", pa.int32(), nullable=False),
        pa.field("offline_semantic_entropy", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class GroupScore:
    """One problem's G rollouts at one step."""

    semantic_entropy: float
    n_classes: int
    pass_rate: float
    undecided: int


def score_group(texts: Sequence[str], correct: Sequence[float], judge: Judge, semantic: SemanticConfig) -> GroupScore:
    """The online SE of one problem's rollouts: their final answers clustered exactly as curation
    clusters its N samples (same judge, missing-answer rule and time budget)."""
    return score_answers_group([extract_answer(t) for t in texts], correct, judge, semantic)


def score_answers_group(
    answers: Sequence[str | None], correct: Sequence[float], judge: Judge, semantic: SemanticConfig
) -> GroupScore:
    """`score_group` of answers already extracted (verl's reward workers extract them)."""
    found = score_answers(
        list(answers),
        equivalent=judge,
        pool_missing=semantic.pool_missing,
        budget_s=semantic.problem_budget_s,
    )
    return GroupScore(found.entropy, found.n_classes, float(np.mean(correct)), found.undecided)


class OnlineOrder:
    """The row order of one stage under ``curriculum.mode: online``; see the module docstring."""

    def __init__(
        self,
        offline_se: Sequence[float],
        ids: Sequence[str],
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        filter_zero: bool,
    ) -> None:
        if len(offline_se) != len(ids) or not ids:
            raise ValueError(f"need one offline SE per row, got {len(offline_se)} for {len(ids)} rows")
        self.offline = [float(x) for x in offline_se]
        self.ids = list(ids)
        self.batch_size, self.seed, self.shuffle, self.filter_zero = batch_size, seed, shuffle, filter_zero
        self.order: list[int] = []
        self.epoch_starts: list[int] = []
        """Where each epoch begins in `order`."""
        self.history: list[dict[str, Any]] = []
        self.latest: dict[int, float] = {}
        """The online SE of each row's last rollout."""
        self._rng = np.random.default_rng(seed)
        self._static: list[np.ndarray] = []

    # ------------------------------------------------------------------ the order

    def static_epoch(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s (1-based) static order: the same permutations, drawn in the same
        sequence from the seed, as the local engine's static order."""
        n = len(self.ids)
        while len(self._static) < epoch:
            self._static.append(self._rng.permutation(n) if self.shuffle else np.arange(n))
        return self._static[epoch - 1]

    def latest_se(self, row: int) -> float:
        return self.latest.get(row, self.offline[row])

    def _next_epoch(self) -> list[int]:
        epoch = len(self.epoch_starts) + 1
        static = [int(i) for i in self.static_epoch(epoch)]
        if epoch == 1:
            return static
        ordered = sorted(static, key=self.latest_se)  # stable: ties keep the static order
        return self._filtered(epoch, ordered) if self.filter_zero else ordered

    def _filtered(self, epoch: int, ordered: list[int]) -> list[int]:
        """``ordered`` without the rows whose latest SE is 0, for this epoch only.

        A row left out is not measured again, so a filter that left it out for good would only
        ever shrink the stage (in the collapse preset it trained one problem, 32 times a batch,
        within a hundred steps). A row left out of the previous epoch is therefore kept, and its SE
        measured again. An epoch also keeps at least one batch of rows, the first of the left-out
        ones in ``ordered``, so that a batch does not repeat a row."""
        previous = set(self.order[self.epoch_starts[-1] :])  # epoch - 1: decided, in full
        due = [i for i in ordered if self.latest_se(i) > 0 or i not in previous]
        short = min(self.batch_size, len(ordered)) - len(due)
        if short > 0:
            chosen = set(due) | set([i for i in ordered if i not in set(due)][:short])
            due = [i for i in ordered if i in chosen]
        if len(due) < len(ordered):
            logger.debug("epoch %d leaves out %d rows at online SE 0", epoch, len(ordered) - len(due))
        return due

    def batch(self, step: int) -> list[tuple[int, int]]:
        """``(row, epoch)`` of the rows step ``step`` (0-based) trains, deciding epochs as needed."""
        end = (step + 1) * self.batch_size
        while len(self.order) < end:
            rows = self._next_epoch()
            self.epoch_starts.append(len(self.order))
            self.order += rows
        return [(self.order[p], self.epoch_at(p)) for p in range(step * self.batch_size, end)]

    def epoch_at(self, position: int) -> int:
        return int(np.searchsorted(self.epoch_starts, position, side="right"))

    # ------------------------------------------------------------------ the record

    def record(self, step: int, batch: Sequence[tuple[int, int]], scores: Sequence[GroupScore]) -> dict[str, float]:
        """Record step ``step``'s (1-based) online SE of each row; the step's metrics."""
        for (row, epoch), s in zip(batch, scores, strict=True):
            self.history.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "row": row,
                    "id": self.ids[row],
                    "semantic_entropy": s.semantic_entropy,
                    "n_classes": s.n_classes,
                    "pass_rate": s.pass_rate,
                    "se_undecided": s.undecided,
                    "offline_semantic_entropy": self.offline[row],
                }
            )
            self.latest[row] = s.semantic_entropy
        values = np.array([s.semantic_entropy for s in scores])
        return {
            "online_se_mean": float(values.mean()),
            "online_se_std": float(values.std()),
            "online_se_zero": float((values == 0).mean()),
            "online_se_zero_seen": float(np.mean([v == 0 for v in self.latest.values()])),
            "online_se_seen": len(self.latest) / len(self.ids),
            "epoch": float(batch[-1][1]),
        }

    def history_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.history, schema=HISTORY_SCHEMA)

    def write_history(self, path: str | Path) -> None:
        """The per-problem history so far, as Parquet (atomically: a reader never sees half)."""
        write_table(self.history_table(), Path(path), HISTORY_SCHEMA)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the history: the order decided so far."""
        return {"order": self.order, "epoch_starts": self.epoch_starts}

    def restore(self, state: dict[str, Any], history: pa.Table) -> None:
        """Back to a checkpoint's order and history (the static permutations are redrawn from the seed)."""
        self.order, self.epoch_starts = [int(i) for i in state["order"]], [int(i) for i in state["epoch_starts"]]
        self.history = history.to_pylist()
        self.latest = {}
        for r in self.history:  # in step order: the last one of a row wins
            self.latest[r["row"]] = r["semantic_entropy"]
        self._rng, self._static = np.random.default_rng(self.seed), []
