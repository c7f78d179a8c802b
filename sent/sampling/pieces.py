"""What the stages of the Ray Data pipelines pass between them: a `Piece` of prompts sampled
together, and completions as JSON. A leaf shared by `sent.sampling.ray_data` (the pipelines) and
`sent.sampling.ray_llm` (their vLLM stage), so that neither imports the other's types."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sent.errors import SentError
from sent.sampling.base import Completion, Messages


class RayExecutorError(SentError, RuntimeError):
    """A Ray Data pipeline that cannot run as configured (Ray or ray.data.llm missing, lost rows)."""


@dataclass(frozen=True)
class Piece:
    """Prompts sampled together: the job's ``seed``, the first prompt's position ``start``."""

    key: str
    prompts: list[Messages]
    seed: int
    start: int = 0


def encode_completions(groups: list[list[Completion]]) -> str:
    """A piece's completions as JSON, the form they travel in between Ray stages."""
    return json.dumps([[asdict(c) for c in group] for group in groups])


def decode_completions(text: str) -> list[list[Completion]]:
    return completions_from(json.loads(text))


def completions_from(groups: list[list[dict[str, Any]]]) -> list[list[Completion]]:
    """`Completion` objects from their fields as JSON holds them."""
    return [[Completion(**_tuples(c)) for c in group] for group in groups]


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """A `Completion`'s fields back from JSON (lists to the tuples it holds)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
