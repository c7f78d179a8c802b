"""The training problems: what one is (`Problem`), and how input rows become problems.

`read_rows` reads JSONL, Parquet or a `datasets` directory row by row; a JSONL line that is not
UTF-8 or not JSON comes back as an `Unreadable` reason, so that validation rejects that row and
keeps the rest. `validate_rows` checks every row: a missing, empty or wrongly typed problem, answer
or id, a duplicate id, a duplicate problem (after whitespace and case normalisation), a chat prompt
over the token budget. Each rejected row keeps its original content and a reason (`Rejection`);
input = accepted + rejected, always.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from sent.chat import render_prompt
from sent.config import SentConfig
from sent.errors import SentError


class CurationError(SentError, RuntimeError):
    """The input or the run cannot be curated; the message says which file, row and field."""


@dataclass(frozen=True)
class Problem:
    index: int
    id: str
    problem: str
    answer: str
    data_source: str


@dataclass(frozen=True)
class Rejection:
    source_file: str
    row: int
    field: str
    reason: str
    original: str


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "datasets"
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    raise CurationError(f"{path}: cannot tell the format from the name; set data.format")


class Unreadable(str):
    """A row that could not be read at all (not UTF-8, not JSON): the reason, in place of the row."""


def _decode_line(raw: bytes) -> tuple[Any, str]:
    """(parsed row, or `Unreadable` with the reason; the original text for ``rejected.parquet``)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        return Unreadable(reason), raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    text = line.rstrip("\r\n")
    try:
        return json.loads(line), text
    except json.JSONDecodeError as exc:
        return Unreadable(f"not valid JSON ({exc.msg} at column {exc.colno})"), text


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CurationError(f"limit must be a positive number of rows, got {limit!r}")


def read_rows(path: str | Path, fmt: str = "auto", limit: int | None = None) -> Iterator[tuple[int, Any, str]]:
    """``(row number, parsed row, original text)`` for each input row (1-based rows). A JSONL line
    that is not UTF-8 or not JSON comes back as an `Unreadable` reason with its text, so that
    validation rejects that row and keeps the rest."""
    check_limit(limit)
    path = Path(path)
    if not path.exists():
        raise CurationError(f"input not found: {path}")
    fmt = _detect_format(path, fmt)
    count = 0
    if fmt == "jsonl":
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                if limit is not None and count >= limit:
                    return
                count += 1
                row, text = _decode_line(raw)
                yield number, row, text
        return
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
    elif fmt == "datasets":
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CurationError(f"{path}: a DatasetDict without a 'train' split ({list(ds)})")
            ds = ds["train"]
        rows = ds
    else:
        raise CurationError(f"unknown input format {fmt!r}")
    for number, row in enumerate(rows, start=1):
        if limit is not None and number > limit:
            return
        yield number, row, json.dumps(row, default=str, ensure_ascii=False)


class NoText(str):
    """Why a field holds no usable text (a reason, not a value: `_text_field` returns one or the other)."""


def _text_field(row: dict, name: str, *, allow_numbers: bool) -> str | NoText:
    """The field's text, or a `NoText` saying why there is none."""
    if name not in row or row[name] is None:
        return NoText(f"missing field {name!r}")
    value = row[name]
    if allow_numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # JSON's NaN/Infinity, a NaN cell in Parquet: no answer at all
            return NoText(f"field {name!r} is {value}, not a finite number")
        value = str(value)  # numeric answers (GSM8K-style) are fine as their decimal text
    if not isinstance(value, str):
        return NoText(f"field {name!r} has type {type(value).__name__}, expected a string")
    if not value.strip():
        return NoText(f"field {name!r} is empty")
    try:
        value.encode("utf-8")  # JSON's "\ud800" decodes to a lone surrogate, which no tokenizer or file takes
    except UnicodeEncodeError as exc:
        return NoText(
            f"field {name!r} holds a lone surrogate ({value[exc.start]!r}) at character {exc.start}: not text"
        )
    return value


def _normalise_problem(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def validate_rows(
    cfg: SentConfig, path: Path, rows: Sequence[tuple[int, Any, str]], tokenizer
) -> tuple[list[Problem], list[Rejection]]:
    """Split input rows into accepted problems and rejections (with reasons)."""
    fields = cfg.data.fields
    accepted: list[Problem] = []
    rejected: list[Rejection] = []
    seen_ids: dict[str, int] = {}
    seen_problems: dict[str, int] = {}
    src = str(path)
    for number, row, original in rows:
        if not isinstance(row, dict):
            reason = str(row) if isinstance(row, Unreadable) else f"a row must be an object, got {type(row).__name__}"
            rejected.append(Rejection(src, number, "", reason, original))
            continue
        problem = _text_field(row, fields.problem, allow_numbers=False)
        if isinstance(problem, NoText):
            rejected.append(Rejection(src, number, fields.problem, str(problem), original))
            continue
        answer = _text_field(row, fields.answer, allow_numbers=True)
        if isinstance(answer, NoText):
            rejected.append(Rejection(src, number, fields.answer, str(answer), original))
            continue
        if fields.id is not None:
            pid = _text_field(row, fields.id, allow_numbers=True)
            if isinstance(pid, NoText):
                rejected.append(Rejection(src, number, fields.id, str(pid), original))
                continue
        else:
            pid = f"row-{number}"
        if pid in seen_ids:
            rejected.append(
                Rejection(
                    src,
                    number,
                    fields.id or "",
                    f"duplicate id {pid!r} (first at row {seen_ids[pid]})",
                    original,
                )
            )
            continue
        key = _normalise_problem(problem)
        if key in seen_problems:
            rejected.append(
                Rejection(
                    src,
                    number,
                    fields.problem,
                    f"duplicate problem (first at row {seen_problems[key]})",
                    original,
                )
            )
            continue
        source = cfg.data.data_source
        if fields.source is not None:
            source = _text_field(row, fields.source, allow_numbers=False)
            if isinstance(source, NoText):
                rejected.append(Rejection(src, number, fields.source, str(source), original))
                continue
        seen_ids[pid] = number
        seen_problems[key] = number
        accepted.append(Problem(len(accepted), pid, problem, answer.strip(), source))
    # prompt budget, in tokens of the chat-formatted prompt (one batched tokenisation)
    if accepted and tokenizer is not None:
        texts = [render_prompt(tokenizer, cfg.prompt.messages(p.problem)) for p in accepted]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        kept = []
        row_of = {p.id: seen_ids[p.id] for p in accepted}
        originals = {n: o for n, _, o in rows}
        for p, n_tokens in zip(accepted, lengths, strict=True):
            if n_tokens > cfg.data.max_prompt_tokens:
                number = row_of[p.id]
                reason = f"prompt has {n_tokens} tokens, over data.max_prompt_tokens={cfg.data.max_prompt_tokens}"
                rejected.append(Rejection(src, number, fields.problem, reason, originals[number]))
            else:
                kept.append(p)
        accepted = [Problem(i, p.id, p.problem, p.answer, p.data_source) for i, p in enumerate(kept)]
    rejected.sort(key=lambda r: r.row)
    return accepted, rejected
