"""Where the paper's data lives on the hub, and how a source row becomes one of ours.

One table, `SOURCES`. Each entry is a hub dataset (repository, config, split) and the columns that
hold the problem, the answer and the source's own id. The repository ids are the ones the
published setups load, checked against their code:
- DAPO-Math-17k: ``BytedTsinghua-SIA/DAPO-Math-17k``, the file verl's DAPO recipe downloads
  (``recipe/dapo/prepare_dapo_data.sh``). Each problem is repeated about a hundred times, and the
  prompt wraps it in DAPO's ``Answer:`` instruction, which we remove: our prompt template adds the
  paper's own.
- AIME24 ``HuggingFaceH4/aime_2024`` (split ``train``), AIME25 ``math-ai/aime25``, AMC23
  ``math-ai/amc23``, MATH500 ``HuggingFaceH4/MATH-500``, Minerva ``math-ai/minervamath``: the
  loaders of lighteval-style math evaluations (NeMo-RL, rLLM, SkyRL) and of the Qwen2.5-Math
  benchmark mirrors.
- OlympiadBench ``Hothan/OlympiadBench``, config ``OE_TO_maths_en_COMP`` (open-ended, text-only,
  English competition maths: 674 problems), whose ``final_answer`` is a list.

A benchmark row becomes ``{id, problem, answer}`` (the schema `sent.evaluation.load_benchmark`
reads) with ``id = <name>-NNNN`` in source order and the source's id kept as ``source_id``; a
training row becomes the same, for curation's default fields. A file that is already in our schema
(string ``id``, ``problem`` and ``answer`` columns) is taken as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sent.errors import SentError

DAPO_PREFIX = "Solve the following math problem step by step."
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:"'
OURS = ("id", "problem", "answer")


class SourceError(SentError, ValueError):
    """A source row or file that does not map to our schema, or a benchmark of the wrong size."""


def unwrap_dapo(prompt: str) -> str:
    """The problem inside DAPO's prompt: ``<instruction>\\n\\n<problem>\\n\\nRemember to put your
    answer on its own line after "Answer:".``"""
    if not prompt.startswith(DAPO_PREFIX) or DAPO_SUFFIX not in prompt:
        raise ValueError("not DAPO's prompt (its 'Solve the following...' line or its 'Remember...' line is missing)")
    body = prompt.partition("\n\n")[2]
    return body.rsplit(DAPO_SUFFIX, 1)[0].strip()


@dataclass(frozen=True)
class Source:
    name: str
    kind: Literal["benchmark", "train"]
    repo: str
    split: str
    config: str | None = None
    problem: str = "problem"
    """Column of the problem text; ``a.0.b`` reaches into nested records and lists."""
    answer: str = "answer"
    source_id: str | None = None
    level: str | None = None
    """Column of a difficulty level, kept as ``level`` (MATH500: `sent.evaluation.benchmark_levels`)."""
    rows: int | None = None
    """The known size of a benchmark; a file of another size is refused."""
    unwrap: Callable[[str], str] | None = None

    @property
    def filename(self) -> str:
        return f"benchmarks/{self.name}.jsonl" if self.kind == "benchmark" else f"datasets/{self.name}.parquet"

    @property
    def columns(self) -> tuple[str, ...]:
        """The top-level columns a source-format file must have."""
        return tuple(path.split(".")[0] for path in (self.problem, self.answer))


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "dapo-math-17k", "train", "BytedTsinghua-SIA/DAPO-Math-17k", "train",
            problem="prompt.0.content", answer="reward_model.ground_truth", source_id="extra_info.index",
            unwrap=unwrap_dapo,
        ),
        Source("aime24", "benchmark", "HuggingFaceH4/aime_2024", "train", source_id="id", rows=30),
        Source("aime25", "benchmark", "math-ai/aime25", "test", rows=30),
        Source("amc23", "benchmark", "math-ai/amc23", "test", problem="question", rows=40),
        Source(
            "math500", "benchmark", "HuggingFaceH4/MATH-500", "test", source_id="unique_id", level="level", rows=500
        ),
        Source(
            "olympiadbench", "benchmark", "Hothan/OlympiadBench", "train", config="OE_TO_maths_en_COMP",
            problem="question", answer="final_answer", source_id="id", rows=674,
        ),
        Source("minerva", "benchmark", "math-ai/minervamath", "test", problem="question", rows=272),
    )
}  # fmt: skip


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """``row["a"]["b"][0]`` for ``a.b.0``; a missing step raises KeyError naming the path."""
    value: Any = row
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list | tuple) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(path)
    return value


def answer_text(value: Any) -> str:
    """A reference answer as text: numbers in decimal (``27.0`` as ``27``), a list (OlympiadBench's
    several final answers) joined with ``", "``."""
    if isinstance(value, list | tuple):
        return ", ".join(answer_text(v) for v in value)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"an answer cannot be {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"an answer cannot be {value}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"an answer must be text or a number, got {type(value).__name__}")
    return value.strip()


def is_ours(columns: set[str], first: Mapping[str, Any] | None) -> bool:
    """A file already in our schema: ``id``, ``problem`` and ``answer`` columns, the ids text."""
    return set(OURS) <= columns and (first is None or isinstance(first.get("id"), str))


def map_row(source: Source, row: Mapping[str, Any], index: int, *, ours: bool) -> dict[str, Any]:
    """Our row for the ``index``-th (0-based) row of a source file. Raises SourceError naming the
    field, for the caller to add the file and the row."""
    paths = {"problem": "problem", "answer": "answer"} if ours else {"problem": source.problem, "answer": source.answer}
    out: dict[str, Any] = {}
    for field, path in paths.items():
        try:
            value = lookup(row, path)
        except KeyError:
            raise SourceError(f"field {path!r} ({field}) is missing") from None
        try:
            text = answer_text(value) if field == "answer" else value
            if not isinstance(text, str):
                raise ValueError(f"expected text, got {type(text).__name__}")
            if field == "problem" and source.unwrap is not None and not ours:
                text = source.unwrap(text)
        except ValueError as exc:
            raise SourceError(f"field {path!r} ({field}): {exc}") from None
        if not text.strip():
            raise SourceError(f"field {path!r} ({field}) is empty")
        out[field] = text
    if ours:
        out = {"id": row["id"], **out}
        if row.get("source_id") is not None:
            out["source_id"] = str(row["source_id"])
    else:
        width = 4 if source.kind == "benchmark" else 6
        out = {"id": f"{source.name}-{index:0{width}d}", **out}
        if source.source_id is not None:
            try:
                out["source_id"] = str(lookup(row, source.source_id))
            except KeyError:
                raise SourceError(f"field {source.source_id!r} (source id) is missing") from None
    level_path = "level" if ours else source.level
    if level_path is not None:
        try:
            level = lookup(row, level_path)
        except KeyError:
            level = None
        if level is not None:
            out["level"] = level
    return out
