"""The sampler contract shared by the `hf` and `vllm` backends (`sent.sampling.configured` makes
one by name): it imports neither backend, so that both can import it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sent.chat import Messages


@dataclass(frozen=True)
class Completion:
    """One sampled response."""

    text: str
    token_ids: tuple[int, ...]
    """Generated token ids, the end-of-turn token included when generation stopped on it."""
    logprob: float
    """Sum of the model's log-probabilities of ``token_ids`` (the raw model distribution, before
    temperature and top-p); NaN when the caller asked for no log-probabilities."""
    finish_reason: Literal["stop", "length"]
    token_logprobs: tuple[float, ...] | None = None
    """Per-token log-probabilities of ``token_ids`` under the raw model distribution, where the
    sampler computes them (``hf``); None otherwise."""
    prompt_token_ids: tuple[int, ...] | None = None
    """The prompt's token ids as the model saw them (chat template applied, no padding)."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Settings:
    """How a job samples: N, temperature, top-p, the response budget, log-probabilities or not.
    Written once per job (curation, a training rollout, an evaluation) and handed to
    `Sampler.generate` whole."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    logprobs: bool = True


class Sampler(Protocol):
    def generate(
        self, prompts: Sequence[Messages], settings: Settings, *, seed: int, start: int = 0
    ) -> list[list[Completion]]:
        """``settings.n`` completions of each chat prompt, in prompt order. Deterministic in
        ``seed``. With ``settings.logprobs`` False no log-probability is computed
        (``Completion.logprob`` is NaN). Both backends stop a response at the tokenizer's EOS and
        at the model's generation config's EOS ids (an instruct model's end of turn).

        ``start`` is the position of the first prompt in a longer job cut into pieces: a piece
        sampled with the job's seed and its ``start`` comes out as the same rows of the whole job
        sampled at once (the ``hf`` sampler needs ``start`` to fall on one of its batches). The
        Ray executor relies on it to spread one job over workers."""
        ...


def request_seed(seed: int, position: int, sample: int) -> int:
    """The seed of one sampled response: sample ``sample`` of the prompt at ``position`` in a job
    seeded ``seed``. A hash, so that no two responses share a random stream (``seed + position +
    sample`` would give sample 1 of one prompt the stream of sample 0 of the next), in 63 bits
    (a signed 64-bit integer in vLLM, Arrow and torch)."""
    digest = hashlib.blake2b(f"{seed}:{position}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def derived_seed(seed: int, index: int) -> int:
    """The ``index``-th seed derived from a run's ``seed`` (a curation chunk, a training step, a
    sampler batch): ``seed * 1_000_003 + index``, the same in every process. Distinct seeds give
    disjoint ranges while indices stay below 1,000,003."""
    return seed * 1_000_003 + index
