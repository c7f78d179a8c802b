"""The rows of one online stage on verl, in the online order, fed by the record of its rollouts.

verl's dataloader asks the stage's dataset (`sent.engines.verl_online`) for one place of the
stage's stream at a time. `OnlineStream.row_at` answers with the row and epoch of that place in
the same online order as the local engine's (`sent.online_se.OnlineOrder`): at the first place of
each step it first takes in the steps that the record (`sent.online_record`) now holds, clustering
each group of G answers with curation's judge, so that an epoch is decided on the SE of every step
before it.

A stream never keeps state of its own across a restart. `resume(step)` brings a new one to verl's
checkpoint: it keeps the record's lines of the first ``step`` steps (the steps after the checkpoint
are trained again) and replays them through a new order, which decides its epochs at the same
steps on the same SEs, and so again gives the order the stopped stream had. The replay also checks
that every recorded place is where this order puts it: a record from other settings is refused.
verl restores its dataloader's position only within an epoch (at an epoch's end it starts the next
afresh), so the step is the one thing both sides can agree on.

The per-problem history (`sent.online_se.HISTORY_FILE`) is rewritten after each step taken in, and
`metrics` holds each step's ``online_se_*`` metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sent import online_record
from sent.online_se import HISTORY_FILE, OnlineOrder, score_answers_group
from sent.semantic import configured_judge

if TYPE_CHECKING:
    from sent.config import SentConfig

logger = logging.getLogger(__name__)
ROWS_FILE = "online_rows.json"
"""The stage's rows as the trainer's dataset holds them (verl may leave out overlong prompts)."""


@dataclass(frozen=True)
class StreamSettings:
    """What an online stage's stream needs, passed to verl's trainer as one JSON value."""

    record: str  # the record of the rollouts (`sent.online_record`)
    history: str  # the per-problem history, Parquet
    rows: str  # `ROWS_FILE`: the rows' ids and curation SEs, for a stream rebuilt outside the trainer
    checkpoints: str  # verl's checkpoint directory: where a resumed stage finds its step
    batch_size: int
    group_size: int
    seed: int
    shuffle: bool
    filter_zero: bool
    semantic: dict[str, Any] = field(default_factory=dict)  # `SemanticConfig`, as JSON

    @classmethod
    def of(cls, cfg: SentConfig, stage_out: Path, seed: int) -> StreamSettings:
        verl = stage_out / "verl"
        return cls(
            record=str(verl / "online_record.jsonl"),
            history=str(stage_out / HISTORY_FILE),
            rows=str(verl / ROWS_FILE),
            checkpoints=str(verl / "checkpoints"),
            batch_size=cfg.training.train_batch_size,
            group_size=cfg.training.group_size,
            seed=seed,
            shuffle=cfg.training.shuffle,
            filter_zero=cfg.curriculum.online_filter,
            semantic=cfg.semantic.model_dump(mode="json"),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StreamSettings:
        return cls(**json.loads(text))


def checkpointed_step(checkpoints: str | Path) -> int:
    """The step verl resumes from with ``resume_mode=auto``: its latest checkpoint, or 0."""
    marker = Path(checkpoints) / "latest_checkpointed_iteration.txt"
    text = marker.read_text().strip() if marker.is_file() else ""
    return int(text) if text else 0


class OnlineStream:
    """One online stage's stream of rows; see the module docstring."""

    def __init__(self, settings: StreamSettings, offline_se: Sequence[float], ids: Sequence[str]) -> None:
        from sent.config import SemanticConfig

        self.settings = settings
        self.offline_se, self.ids = [float(x) for x in offline_se], [str(i) for i in ids]
        self.semantic = SemanticConfig.model_validate(settings.semantic)
        self.judge = configured_judge(self.semantic)
        self._reset()

    def _reset(self) -> None:
        s = self.settings
        self.order = OnlineOrder(
            self.offline_se,
            self.ids,
            batch_size=s.batch_size,
            seed=s.seed,
            shuffle=s.shuffle,
            filter_zero=s.filter_zero,
        )
        self.taken = 0  # steps taken in from the record
        self._offset = 0  # bytes of the record read
        self._pending: list[online_record.Record] = []  # read, of steps not complete yet
        self._batch: list[tuple[int, int]] = []
        self._step = -1  # the step of `_batch`
        self.metrics: dict[int, dict[str, float]] = {}
        """Each step's (1-based) ``online_se_*`` metrics, as the local engine logs them."""

    @classmethod
    def from_rows_file(cls, settings: StreamSettings) -> OnlineStream:
        rows = json.loads(Path(settings.rows).read_text(encoding="utf-8"))
        return cls(settings, rows["offline_se"], rows["ids"])

    def write_rows_file(self) -> None:
        path = Path(self.settings.rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"ids": self.ids, "offline_se": self.offline_se}), encoding="utf-8")
        tmp.replace(path)

    # ---------------------------------------------------------------- the stream

    def resume(self, step: int) -> None:
        """Back to the state after ``step`` steps (0: the stage's start), from the record alone."""
        self._reset()
        online_record.keep_before(self.settings.record, step * self.settings.batch_size)
        self.take_in(required=step)
        self.order.write_history(self.settings.history)  # also when empty: not a killed run's
        if step:
            logger.info("online stream: resumed after step %d from %s", step, self.settings.record)

    def row_at(self, position: int) -> tuple[int, int]:
        """``(row, epoch)`` at ``position`` of the stream; places are asked for in order."""
        step, k = divmod(position, self.settings.batch_size)
        if k == 0:  # a step's first place: its batch is decided on every step before it
            self.take_in(required=step)
            self._batch, self._step = self.order.batch(step), step
        elif step != self._step:
            raise RuntimeError(f"online stream: place {position} asked for before its step's first place")
        return self._batch[k]

    def take_in(self, required: int = 0) -> int:
        """Take in every step the record holds in full; the first ``required`` steps must be
        there (their rewards were computed before the next batch was asked for). Returns the
        number of steps taken in."""
        s = self.settings
        new, self._offset = online_record.read(s.record, self._offset)
        self._pending += new
        per_step = s.batch_size * s.group_size
        before = self.taken
        while True:
            lo, hi = self.taken * s.batch_size, (self.taken + 1) * s.batch_size
            lines = [r for r in self._pending if lo <= r.position < hi]
            if len(lines) > per_step:
                raise ValueError(
                    f"{s.record}: step {self.taken + 1} has {len(lines)} recorded rollouts, more than "
                    f"{s.batch_size} rows x {s.group_size} responses (two runs writing one record?)"
                )
            if len(lines) < per_step:
                break
            self._take_step(lines)
        if self.taken < required:
            raise ValueError(
                f"{s.record} holds {self.taken} complete steps, and step {required + 1} needs the "
                f"{required} before it: the reward function must write where the trainer reads "
                "(one machine, or a filesystem every Ray node shares)"
            )
        if self.taken > before:
            self.order.write_history(s.history)
        return self.taken - before

    def _take_step(self, lines: list[online_record.Record]) -> None:
        s = self.settings
        step = self.taken  # 0-based
        batch = self.order.batch(step)  # decides the epochs this step reaches, as the live stream did
        groups: list[list[online_record.Record]] = [[] for _ in batch]
        for r in lines:
            k = r.position - step * s.batch_size
            row, epoch = batch[k]
            if (r.row, r.epoch, r.id) != (row, epoch, self.ids[row]):
                raise ValueError(
                    f"{s.record}: place {r.position} recorded row {r.row} ({r.id!r}, epoch {r.epoch}), and this "
                    f"stage's order puts row {row} ({self.ids[row]!r}, epoch {epoch}) there: the record was made "
                    "with other settings or rows; retrain the stage with --fresh"
                )
            groups[k].append(r)
        scores = [
            score_answers_group([r.answer for r in g], [float(r.acc) for r in g], self.judge, self.semantic)
            for g in groups
        ]
        self.metrics[step + 1] = self.order.record(step + 1, batch, scores)
        self._pending = [r for r in self._pending if r.position >= (step + 1) * s.batch_size]
        self.taken = step + 1
