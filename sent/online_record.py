"""The record of an online stage on verl: one JSON line per training rollout, so that the trainer
can compute the online SE of answers that only verl's reward workers see.

Under ``curriculum.mode: online`` the stage's dataset (`sent.engines.verl_online`) puts the row's
place in the stream (`place`) into the ``extra_info`` that verl hands our reward function. The
reward function (`sent.grading.compute_score`, in verl's reward workers) then appends the
rollout's extracted answer and correctness here (`append`); the trainer's dataset reads the
record back (`read`) to cluster each group of G answers (`sent.online_stream`).

Why a file: verl 0.9 hands a step's batch to user code only through its legacy trainer's
``on_batch_end``, after the step's checkpoint is saved and never after the last step; its V1
trainer (the default) has no such hook at all. The reward function runs before
the save, so a step's lines are in the record before the checkpoint that follows it, and a
resumed stage finds everything its order depends on (`keep_before` drops the lines of the steps
after the checkpoint). Every line is one ``write`` to a file opened with ``O_APPEND``, so the
lines of concurrent reward workers do not interleave; a line cut by a kill -9 is dropped.

This module imports nothing of ours: the reward function sits low in the package's layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KEY = "sent_online"
"""The ``extra_info`` key of a training row's place (validation rows have none: not recorded)."""


@dataclass(frozen=True)
class Record:
    """One rollout of one training row."""

    position: int  # the row's place in the stage's stream of rows (0-based): its step is position // batch size
    row: int  # the row in the stage's dataset
    epoch: int  # the epoch (1-based) of that place in the online order
    id: str
    answer: str | None  # `sent.grading.extract_answer` of the response
    acc: bool


def place(position: int, row: int, epoch: int, record: str | Path) -> dict[str, Any]:
    """What the dataset puts into a row's ``extra_info[KEY]``: where the row is, where to record."""
    return {"position": position, "row": row, "epoch": epoch, "record": str(record)}


def append(extra_info: dict[str, Any] | None, problem_id: str, answer: str | None, acc: bool) -> None:
    """Append one rollout to the record named in ``extra_info`` (nothing without a place)."""
    where = (extra_info or {}).get(KEY)
    if not where:
        return
    line = Record(int(where["position"]), int(where["row"]), int(where["epoch"]), problem_id, answer, bool(acc))
    data = (json.dumps(asdict(line), ensure_ascii=False) + "\n").encode()
    fd = os.open(where["record"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write: concurrent appenders do not interleave within it
    finally:
        os.close(fd)


def read(path: str | Path, offset: int = 0) -> tuple[list[Record], int]:
    """The record's complete lines from byte ``offset`` on, in the order they were written, and
    the offset after the last of them (a line still being written, or cut, is left for later)."""
    path = Path(path)
    if not path.is_file():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            records.append(Record(**json.loads(line)))
        except (ValueError, TypeError) as e:
            where = f"line {number}" if offset == 0 else f"line {number} after byte {offset}"
            raise ValueError(f"{path}, {where}: not a record of the online SE ({e}): {line[:200]!r}") from e
    return records, offset + len(complete)


def keep_before(path: str | Path, position: int) -> list[Record]:
    """Rewrite the record with only the lines of the places before ``position`` (atomically), and
    return them: a resumed stage drops what the steps after its checkpoint recorded."""
    path = Path(path)
    records, end = read(path)
    kept = [r for r in records if r.position < position]
    torn = path.is_file() and path.stat().st_size != end  # a line cut by a kill after the last whole one
    if len(kept) != len(records) or torn:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)
    return kept
