"""Evaluation on the paper's benchmarks: pass@k, avg@n and maj@n (METHOD.md §5).

Benchmarks by name: ``aime24, aime25, amc23, math500, olympiadbench, minerva`` are JSONL files
``<data_dir>/<name>.jsonl`` with ``{id, problem, answer}`` rows; ``toy`` is the toy world's test
split (``<toy.data_dir>/test.jsonl``). Each problem gets the paper's zero-shot prompt in the chat
template and n samples; answers are graded with `sent.rewards`.

Metrics per benchmark, and their unweighted mean over benchmarks:
- ``pass@k``: the unbiased estimator of Chen et al. (2021), ``1 - C(n - c, k) / C(n, k)`` for a
  problem with c correct of n samples, averaged over problems (k <= n);
- ``avg@n``: mean accuracy over all samples;
- ``maj@n``: the majority answer is right (answers clustered by equivalence; the largest class
  wins, ties to the class seen first; responses without an answer do not vote);
- ``se@n`` and ``distinct@n``: the policy's diversity on held-out problems: the mean semantic
  entropy of a problem's n answers (nats; the same clustering, each response without an answer a
  class of its own, as in curation) and the mean number of distinct answers.
Outputs: ``results.json``, ``results.md`` (a Markdown table) and ``details.parquet`` (one row per
sample: benchmark, problem id, sample, response, extracted answer, correct), like the seed's
``--dump-eval-details``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sent import interrupt
from sent.config import SentConfig
from sent.errors import SentError
from sent.rewards import extract_answer, is_equivalent, warm_up_verifier
from sent.sampling.base import Settings
from sent.semantic import discrete_entropy, score_answers

logger = logging.getLogger(__name__)

PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva")
BENCHMARKS = (*PAPER_BENCHMARKS, "toy")

DETAILS_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("id", pa.string()),
        ("sample", pa.int32()),
        ("response", pa.string()),
        ("answer", pa.string()),
        ("correct", pa.bool_()),
    ]
)


class EvaluationError(SentError, ValueError):
    """An unknown benchmark, or a benchmark or responses file that does not parse."""


@dataclass(frozen=True)
class BenchmarkProblem:
    id: str
    problem: str
    answer: str


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n - c, k) / C(n, k)``, computed as a product
    so that large n does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def benchmark_path(name: str, data_dir: str | Path | None, toy_dir: str | Path | None = None) -> Path:
    if name not in BENCHMARKS:
        raise EvaluationError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if name == "toy":
        if toy_dir is None:
            raise EvaluationError("benchmark 'toy' needs the toy world (a config with a toy section)")
        return Path(toy_dir) / "test.jsonl"
    if data_dir is None:
        raise EvaluationError(f"benchmark {name!r} needs a data directory (--data-dir or evaluation.data_dir)")
    return Path(data_dir) / f"{name}.jsonl"


def _jsonl_objects(path: Path, what: str, rejected: list[tuple[int, str]] | None = None):
    """``(line number, object)`` for each non-blank line. A line that is not UTF-8, not JSON or not
    an object is an error naming the file and the line; with a ``rejected`` list it is recorded
    there as ``(line, reason)`` instead, and the rest is read."""
    if not path.is_file():
        raise EvaluationError(f"{what} file not found: {path}")
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                reason = None if isinstance(row, dict) else "a row must be an object"
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            except json.JSONDecodeError as exc:
                reason = f"not valid JSON ({exc.msg})"
            if reason is None:
                yield line_no, row
            elif rejected is None:
                raise EvaluationError(f"{path}:{line_no}: {reason}")
            else:
                logger.warning("%s:%d: %s; row skipped", path, line_no, reason)
                rejected.append((line_no, reason))


def load_benchmark(path: str | Path) -> list[BenchmarkProblem]:
    """Rows ``{id, problem, answer}`` of a benchmark file; any malformed row is an error that names
    the file, the line and the field."""
    path = Path(path)
    problems: list[BenchmarkProblem] = []
    seen: set[str] = set()
    for line_no, row in _jsonl_objects(path, "benchmark"):
        values = {}
        for key in ("id", "problem", "answer"):
            value = row.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "problem":
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise EvaluationError(f"{path}:{line_no}: field {key!r} is missing, empty or not a string")
            values[key] = value
        if values["id"] in seen:
            raise EvaluationError(f"{path}:{line_no}: duplicate id {values['id']!r}")
        seen.add(values["id"])
        problems.append(BenchmarkProblem(**values))
    if not problems:
        raise EvaluationError(f"{path}: no problems")
    return problems


def benchmark_levels(path: str | Path) -> dict[str, str]:
    """``{problem id: "L<level>"}`` of a benchmark file whose rows have a ``level`` (the toy world,
    MATH500); empty for one without. A malformed row is an error naming the file and the line."""
    return {
        str(row["id"]): f"L{row['level']}"
        for _, row in _jsonl_objects(Path(path), "benchmark")
        if row.get("level") is not None
    }


def majority_correct(answers: Sequence[str | None], ground_truth: str) -> bool:
    return AnswerSpread.of(answers).majority_correct(ground_truth)


@dataclass(frozen=True)
class AnswerSpread:
    """One problem's n answers clustered by equivalence (`sent.semantic`, the math judge): the
    majority answer, the semantic entropy (each response without an answer a class of its own, as
    in curation) and the number of distinct answers (responses without one neither vote nor count)."""

    majority: str | None
    entropy: float
    distinct: int

    @classmethod
    def of(cls, answers: Sequence[str | None]) -> AnswerSpread:
        ids = score_answers(answers).cluster_ids
        present = [i for i, a in enumerate(answers) if a is not None and a.strip()]
        counts = Counter(ids[i] for i in present)
        first: dict[int, int] = {}
        for i in present:
            first.setdefault(ids[i], i)
        # the largest class; ties to the class seen first
        winner = max(counts, key=lambda c: (counts[c], -first[c])) if counts else None
        majority = str(answers[first[winner]]) if winner is not None else None
        return cls(majority, discrete_entropy(ids), len(counts))

    def majority_correct(self, ground_truth: str) -> bool:
        return self.majority is not None and is_equivalent(self.majority, ground_truth)


def score_benchmark(
    name: str, problems: Sequence[BenchmarkProblem], responses: dict[str, list[str]], ks: Sequence[int]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, per-sample details) of one benchmark. Every problem needs the same number n of
    responses; pass@k is reported for each k <= n."""
    missing = [p.id for p in problems if p.id not in responses]
    if missing:
        raise EvaluationError(f"{name}: no responses for {len(missing)} problems (first: {missing[0]!r})")
    sizes = {len(responses[p.id]) for p in problems}
    if len(sizes) != 1 or 0 in sizes:
        raise EvaluationError(f"{name}: every problem needs the same number of responses, got {sorted(sizes)}")
    n = sizes.pop()
    details, correct_counts, majority, entropies, distinct = [], [], [], [], []
    for p in problems:
        answers = [extract_answer(r) for r in responses[p.id]]
        correct = [a is not None and is_equivalent(a, p.answer) for a in answers]
        correct_counts.append(sum(correct))
        spread = AnswerSpread.of(answers)
        majority.append(spread.majority_correct(p.answer))
        entropies.append(spread.entropy)
        distinct.append(spread.distinct)
        details += [
            {"benchmark": name, "id": p.id, "sample": i, "response": r, "answer": a, "correct": c}
            for i, (r, a, c) in enumerate(zip(responses[p.id], answers, correct, strict=True))
        ]
    metrics: dict[str, float] = {"problems": float(len(problems)), "n": float(n)}
    for k in sorted(set(ks)):
        if k <= n:
            metrics[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in correct_counts]))
    metrics[f"avg@{n}"] = float(np.sum(correct_counts) / (n * len(problems)))
    metrics[f"maj@{n}"] = float(np.mean(majority))
    metrics[f"se@{n}"] = float(np.mean(entropies))
    metrics[f"distinct@{n}"] = float(np.mean(distinct))
    return metrics, details


def summarize(per_benchmark: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean of each metric over the benchmarks that report it."""
    keys = sorted({k for m in per_benchmark.values() for k in m if k not in ("problems", "n")})
    return {k: float(np.mean([m[k] for m in per_benchmark.values() if k in m])) for k in keys}


def flat_metrics(results: dict[str, Any], *, counts: bool = True) -> dict[str, float]:
    """An evaluation's results as one flat mapping, for MLflow: ``mean.<metric>`` over benchmarks
    and ``<benchmark>.<metric>`` for each; ``counts=False`` leaves out each benchmark's
    ``problems`` and ``n``, which are sizes, not scores (a comparison of two models has no use for them)."""
    flat = {f"mean.{k}": v for k, v in results["mean"].items()}
    for bench, metrics in results["benchmarks"].items():
        flat.update({f"{bench}.{k}": v for k, v in metrics.items() if counts or k not in ("problems", "n")})
    return flat


SPREAD_METRICS = ("se@", "distinct@")
"""Metrics that are not shares of problems: the mean semantic entropy of a problem's n answers
(nats) and its mean number of distinct answers, a measure of the policy's diversity."""


def is_share(metric: str) -> bool:
    """Whether ``metric`` is a share (shown in points); the answer-spread metrics are not."""
    return not metric.startswith(SPREAD_METRICS)


def format_metric(metric: str, value: float) -> str:
    return f"{100 * value:.2f}" if is_share(metric) else f"{value:.3f}"


def markdown_table(per_benchmark: dict[str, dict[str, float]], mean: dict[str, float]) -> str:
    """Pass@k first, then avg/maj (points), then the answers' spread (SE in nats, distinct answers)."""
    keys = sorted(mean, key=lambda k: (not k.startswith("pass@"), not is_share(k)))
    lines = ["| benchmark | problems | " + " | ".join(keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
    for name, m in per_benchmark.items():
        cells = [format_metric(k, m[k]) if k in m else "" for k in keys]
        lines.append(f"| {name} | {int(m['problems'])} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{format_metric(k, mean[k])}**" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, per_benchmark: dict, details: list[dict[str, Any]], meta: dict[str, Any]) -> dict:
    from sent.data_contract import write_json, write_rows

    mean = summarize(per_benchmark)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(details, out_dir / "details.parquet", DETAILS_SCHEMA)
    (out_dir / "results.md").write_text(markdown_table(per_benchmark, mean), encoding="utf-8")
    return write_json({**meta, "benchmarks": per_benchmark, "mean": mean}, out_dir / "results.json")


@dataclass
class Responses:
    """A responses file: samples by problem id, and the rows that could not be read."""

    path: Path
    by_id: dict[str, list[str]]
    rejected: list[tuple[int, str]]
    """``(line, reason)`` of rows that are not UTF-8 or not JSON (kept out, counted in the results)."""


def read_responses(path: str | Path) -> Responses:
    """JSONL of ``{id, response}`` (several rows per id = several samples, in file order). An
    unreadable row is left out with its line number and reason; a row of the wrong shape is an
    error."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    rejected: list[tuple[int, str]] = []
    for line_no, row in _jsonl_objects(path, "responses", rejected):
        if "id" not in row or "response" not in row:
            raise EvaluationError(f'{path}:{line_no}: expected {{"id": ..., "response": ...}}')
        pid, response = row["id"], row["response"]
        if not isinstance(response, str):
            raise EvaluationError(f"{path}:{line_no}: field 'response' is not a string")
        out.setdefault(str(pid), []).append(response)
    return Responses(path, out, rejected)


def evaluate_responses(
    responses: Responses | dict[str, list[str]],
    benchmarks: Sequence[str],
    *,
    data_dir=None,
    toy_dir=None,
    ks=(1,),
    allow_unknown_ids: bool = False,
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Score given responses on ``benchmarks``. Responses whose id is in none of the benchmarks are an
    error (a wrong file, or ids that drifted), or, with ``allow_unknown_ids``, a counted warning."""
    by_id = responses.by_id if isinstance(responses, Responses) else responses
    where = str(responses.path) if isinstance(responses, Responses) else "the responses"
    per_benchmark: dict[str, dict[str, float]] = {}
    details: list[dict[str, Any]] = []
    known: set[str] = set()
    for name in benchmarks:
        problems = load_benchmark(benchmark_path(name, data_dir, toy_dir))
        known.update(p.id for p in problems)
        metrics, rows = score_benchmark(name, problems, by_id, ks)
        per_benchmark[name] = metrics
        details += rows
    unknown = sorted(set(by_id) - known)
    if unknown:
        message = (
            f"{where}: {len(unknown)} ids are in none of the benchmarks {list(benchmarks)} (first: {unknown[0]!r})"
        )
        if not allow_unknown_ids:
            raise EvaluationError(f"{message}; pass --allow-unknown-ids to score the rest anyway")
        logger.warning("%s; scored the rest (--allow-unknown-ids)", message)
    return per_benchmark, details


def _sample_stoppably(sampler, prompts: list, settings: Settings, seed: int, name: str) -> list:
    """A benchmark's samples, one sampler batch at a time with a stop check between (a SIGTERM
    waited minutes for a whole benchmark). The pieces are the rows of one job sampled whole
    (`Sampler.generate`'s ``start``); a sampler without batches (vLLM's) gets the job at once."""
    step = getattr(sampler, "batch_size", 0) or max(1, len(prompts))
    outs: list = []
    for lo in range(0, len(prompts), step):
        interrupt.check(
            f"while evaluating {name} (an evaluation writes nothing until it ends: a rerun starts it again)"
        )
        outs += sampler.generate(prompts[lo : lo + step], settings, seed=seed, start=lo)
    return outs


def evaluate_model(
    cfg,
    *,
    model_path: str | Path,
    benchmarks: Sequence[str] | None = None,
    n: int | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path,
    sampler=None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Sample ``n`` responses per problem from the model at ``model_path`` and score them. Each
    benchmark is one sampling job seeded ``seed``; with ``sampling.executor: ray`` all of them run
    as one Ray Dataset (`sent.sampling.ray_data.sample_benchmarks`), with the same results."""
    from sent.config import ModelConfig
    from sent.sampling.configured import build_sampler

    ev = cfg.evaluation
    benchmarks = list(benchmarks or ev.benchmarks)
    n = n or ev.n
    limit = limit if limit is not None else ev.limit
    data_dir = data_dir or ev.data_dir
    toy_dir = cfg.toy.data_dir if cfg.toy is not None else None
    model = ModelConfig(**{**cfg.model.model_dump(), "path": str(model_path), "tokenizer": None})
    jobs = {name: load_benchmark(benchmark_path(name, data_dir, toy_dir))[:limit] for name in benchmarks}
    # graded by their text only: no log-probabilities
    settings = Settings(n, ev.temperature, ev.top_p, ev.max_new_tokens, logprobs=False)
    if sampler is None and cfg.sampling.executor == "ray":
        from sent.sampling.ray_data import sample_benchmarks

        interrupt.check("before evaluating on Ray")
        prompts = {name: [cfg.prompt.messages(p.problem) for p in problems] for name, problems in jobs.items()}
        sampled = sample_benchmarks(cfg, model, ev.backend, prompts, settings, cfg.seed)
    else:
        sampler = sampler or build_sampler(cfg, model, backend=ev.backend)
        sampled = None
    warm_up_verifier(workers=cfg.semantic.verify_workers)
    per_benchmark, details = {}, []
    for name, problems in jobs.items():
        if sampled is not None:
            outs = sampled[name]
        else:
            outs = _sample_stoppably(
                sampler, [cfg.prompt.messages(p.problem) for p in problems], settings, cfg.seed, name
            )
        responses = {p.id: [c.text for c in cs] for p, cs in zip(problems, outs, strict=True)}
        metrics, rows = score_benchmark(name, problems, responses, ev.k)
        per_benchmark[name] = metrics
        details += rows
        logger.info("%s: %s", name, {k: round(v, 4) for k, v in metrics.items()})
    meta = {
        "model": str(model_path),
        "n": n,
        "temperature": ev.temperature,
        "top_p": ev.top_p,
        "max_new_tokens": ev.max_new_tokens,
        "seed": cfg.seed,
    }
    return write_results(Path(out_dir), per_benchmark, details, meta)


def level_groups(cfg: SentConfig) -> tuple[dict[str, dict[str, str]], set[str]]:
    """For paired comparisons (`sent.stats`): each configured benchmark's ``{id: level}`` (where its
    JSONL has levels), and the groups a toy run trains on (``{"toy L1", ...}``; empty otherwise)."""
    ev, toy = cfg.evaluation, cfg.toy
    levels = {}
    for name in ev.benchmarks:
        try:
            path = benchmark_path(name, ev.data_dir, toy.data_dir if toy is not None else None)
        except EvaluationError:
            continue
        if path.is_file():
            levels[name] = benchmark_levels(path)
    trained = {f"toy L{level}" for level in toy.rl_levels} if toy is not None else set()
    return levels, trained
