"""One chunk of curation: N completions of each problem sampled, graded and clustered into the rows
of ``samples/part-K.parquet``.

Both executors run chunks through these functions: the local loop of `sent.curate` and the Ray Data
pipeline (`sent.sampling.ray_data`), which samples and grades in different processes. A chunk is
seeded by the run's seed and its index (`chunk_seed`), so it comes out the same whichever process
samples it. This module imports nothing of curation's own, so the sampling layer can depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pyarrow as pa

from sent.config import SentConfig
from sent.data_contract import SAMPLES_SCHEMA
from sent.problems import CurationError, Problem
from sent.rewards import extract_answer, grade_answer
from sent.sampling.base import Completion, Settings, derived_seed
from sent.semantic import cluster_within

logger = logging.getLogger(__name__)


def sample_chunk(cfg: SentConfig, problems: Sequence[Problem], sampler, chunk_index: int, judge) -> pa.Table:
    """Sample, grade and cluster one chunk: the rows of ``samples/part-<chunk_index>.parquet``."""
    return grade_chunk(cfg, problems, generate_chunk(cfg, problems, sampler, chunk_index), judge)


def chunk_seed(cfg: SentConfig, chunk_index: int) -> int:
    """A chunk's sampling seed: the run's seed and the chunk's index, so a chunk comes out the same
    whichever process samples it."""
    return derived_seed(cfg.seed, chunk_index)


def curation_settings(cfg: SentConfig) -> Settings:
    """How curation samples (``sampling``), whichever executor runs it."""
    sampling = cfg.sampling
    return Settings(sampling.n, sampling.temperature, sampling.top_p, sampling.max_new_tokens)


def generate_chunk(cfg: SentConfig, problems: Sequence[Problem], sampler, chunk_index: int) -> list[list[Completion]]:
    """The N completions of each problem of a chunk, seeded by `chunk_seed`."""
    return sampler.generate(
        [cfg.prompt.messages(p.problem) for p in problems], curation_settings(cfg), seed=chunk_seed(cfg, chunk_index)
    )


def grade_chunk(cfg: SentConfig, problems: Sequence[Problem], outs: list[list[Completion]], judge) -> pa.Table:
    """Extract, cluster and grade a chunk's completions (CPU only): its ``SAMPLES_SCHEMA`` rows."""
    sampling = cfg.sampling
    rows = []
    for p, completions in zip(problems, outs, strict=True):
        if len(completions) != sampling.n:
            raise CurationError(f"sampler returned {len(completions)} completions for {p.id}, expected {sampling.n}")
        answers = [extract_answer(c.text) for c in completions]
        found = cluster_within(
            answers, judge, pool_missing=cfg.semantic.pool_missing, budget_s=cfg.semantic.problem_budget_s
        )
        if found.undecided:
            logger.warning("%s: %d answer comparisons undecided within the problem's budget", p.id, found.undecided)
        for k, (c, a, cid) in enumerate(zip(completions, answers, found.ids, strict=True)):
            verdict = grade_answer(a, p.answer, timeout=cfg.semantic.judge_timeout_s)
            rows.append(
                {
                    "index": p.index,
                    "id": p.id,
                    "sample": k,
                    "text": c.text,
                    "n_tokens": c.n_tokens,
                    "logprob": c.logprob,
                    "finish_reason": c.finish_reason,
                    "answer": a,
                    "correct": verdict is True,
                    "class_id": cid,
                    "grade_undecided": verdict is None,
                    "se_undecided": found.undecided,
                }
            )
    return pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA)
