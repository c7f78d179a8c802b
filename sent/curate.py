"""Offline curation: problems -> N sampled responses -> semantic entropy -> staged curriculum.

`curate` is the whole phase (``sent curate``):

1. Read the problems (JSONL, Parquet or a `datasets` directory, with a field mapping) and
   validate every row: missing, empty or wrongly typed problem/answer/id, duplicate ids,
   duplicate problems (after whitespace and case normalisation), chat prompts over the token
   budget. Rejected rows keep their original content and a reason in ``rejected.parquet``;
   input = accepted + rejected, always; too many rejections (default > 5 %) stop the run.
2. Sample N responses per problem in chunks; each chunk is graded, clustered and written as
   ``samples/part-K.parquet`` (atomically). A rerun with the same configuration and output
   directory skips completed chunks, and sampling is seeded per chunk, so an interrupted run
   finishes with the same result as an uninterrupted one.
3. Score each problem: discrete and weighted semantic entropy, classes, pass rate
   (``scores.parquet``); assign stages (low entropy first); optionally drop problems with no
   GRPO signal (all N right or all wrong; off by default, as in the paper).
4. Write the stages in verl's schema (``stage-K/part-J.parquet``, sorted by SE within a stage),
   the plots, and ``manifest.json`` last.

The output directory is never overwritten: a finished run with the same configuration is
reused as it is; any other existing directory is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sent import __version__, interrupt
from sent.config import SentConfig
from sent.curriculum import assign_stages, stage_summary
from sent.data_contract import (
    CURRICULUM_SCHEMA,
    MANIFEST,
    REJECTED_SCHEMA,
    SAMPLES_SCHEMA,
    SCHEMA_VERSION,
    SCORES_SCHEMA,
    ContractError,
    file_entry,
    load_manifest,
    write_json,
    write_rows,
    write_table,
)
from sent.integrity import file_problem, seal_file
from sent.locks import LOCK_FILE, exclusive
from sent.rewards import warm_up_verifier
from sent.sampling.chunk import CurationError, Problem, sample_chunk
from sent.sampling.configured import build_sampler
from sent.semantic import configured_judge, discrete_entropy, weighted_entropy

logger = logging.getLogger(__name__)
STATE = "curation.json"
CONFIG_SECTIONS = ("model", "data", "prompt", "sampling", "semantic", "curriculum")


@dataclass(frozen=True)
class Rejection:
    source_file: str
    row: int
    field: str
    reason: str
    original: str


@dataclass(frozen=True)
class CurationResult:
    out_dir: Path
    manifest: dict[str, Any]
    reused: bool


# --------------------------------------------------------------------------------------------
# 1. reading and validation
# --------------------------------------------------------------------------------------------


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


def _text_field(row: dict, name: str, *, allow_numbers: bool) -> tuple[str | None, str | None]:
    """(value, None) or (None, reason)."""
    if name not in row or row[name] is None:
        return None, f"missing field {name!r}"
    value = row[name]
    if allow_numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # JSON's NaN/Infinity, a NaN cell in Parquet: no answer at all
            return None, f"field {name!r} is {value}, not a finite number"
        value = str(value)  # numeric answers (GSM8K-style) are fine as their decimal text
    if not isinstance(value, str):
        return None, f"field {name!r} has type {type(value).__name__}, expected a string"
    if not value.strip():
        return None, f"field {name!r} is empty"
    try:
        value.encode("utf-8")  # JSON's "\ud800" decodes to a lone surrogate, which no tokenizer or file takes
    except UnicodeEncodeError as exc:
        return None, f"field {name!r} holds a lone surrogate ({value[exc.start]!r}) at character {exc.start}: not text"
    return value, None


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
        problem, why = _text_field(row, fields.problem, allow_numbers=False)
        if why:
            rejected.append(Rejection(src, number, fields.problem, why, original))
            continue
        answer, why = _text_field(row, fields.answer, allow_numbers=True)
        if why:
            rejected.append(Rejection(src, number, fields.answer, why, original))
            continue
        if fields.id is not None:
            pid, why = _text_field(row, fields.id, allow_numbers=True)
            if why:
                rejected.append(Rejection(src, number, fields.id, why, original))
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
            source, why = _text_field(row, fields.source, allow_numbers=False)
            if why:
                rejected.append(Rejection(src, number, fields.source, why, original))
                continue
        seen_ids[pid] = number
        seen_problems[key] = number
        accepted.append(Problem(len(accepted), pid, problem, answer.strip(), source))
    # prompt budget, in tokens of the chat-formatted prompt (one batched tokenisation)
    if accepted and tokenizer is not None:
        texts = [
            tokenizer.apply_chat_template(cfg.prompt.messages(p.problem), tokenize=False, add_generation_prompt=True)
            for p in accepted
        ]
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


# --------------------------------------------------------------------------------------------
# 2. sampling, grading and clustering, chunk by chunk (`sent.sampling.chunk`)
# --------------------------------------------------------------------------------------------


def _chunk_complete(path: Path, expected_rows: int) -> bool:
    """Whether a chunk's part was written whole by this version and is still those bytes (its
    digest, `sent.integrity`), with the rows and schema it should have. A damaged part is
    sampled again: chunks are seeded by their index, so it comes back the same."""
    if not path.exists():
        return False
    problem = file_problem(path)
    if problem is None:
        try:
            f = pq.ParquetFile(path)
            if f.metadata.num_rows == expected_rows and f.schema_arrow.equals(SAMPLES_SCHEMA):
                return True
            problem = f"{path} has {f.metadata.num_rows} rows or another schema, expected {expected_rows} rows"
        except Exception as exc:
            problem = f"{path} does not read as Parquet ({type(exc).__name__})"
    logger.warning("%s; the chunk is sampled again", problem)
    return False


# --------------------------------------------------------------------------------------------
# 3. scores and stages
# --------------------------------------------------------------------------------------------


def score_problems(cfg: SentConfig, problems: Sequence[Problem], samples: pa.Table) -> list[dict[str, Any]]:
    cols = samples.to_pydict()
    n = cfg.sampling.n
    rows = []
    for p in problems:
        sl = slice(p.index * n, (p.index + 1) * n)
        ids, lps, lens = cols["class_id"][sl], cols["logprob"][sl], cols["n_tokens"][sl]
        if cols["index"][sl] != [p.index] * n:
            raise ContractError(f"samples of problem {p.id} are not where expected")
        finite = [lp for lp in lps if lp is not None and math.isfinite(lp)]
        weighted = (
            weighted_entropy(ids, [lp if lp is not None else float("nan") for lp in lps], [max(1, t) for t in lens])
            if len(finite) == n
            else float("nan")
        )
        correct = cols["correct"][sl]
        undecided = cols["se_undecided"][sl]
        rows.append(
            {
                "index": p.index,
                "id": p.id,
                "data_source": p.data_source,
                "problem": p.problem,
                "answer": p.answer,
                "semantic_entropy": discrete_entropy(ids),
                "weighted_semantic_entropy": weighted,
                "n_classes": len(set(ids)),
                "pass_rate": sum(correct) / n,
                "answered_rate": sum(a is not None for a in cols["answer"][sl]) / n,
                "mean_tokens": float(np.mean(lens)),
                "se_undecided": undecided[0],
                "grade_undecided": sum(cols["grade_undecided"][sl]),
                "filtered": False,
                "stage": None,
            }
        )
    return rows


def assign(cfg: SentConfig, scores: list[dict[str, Any]]) -> None:
    """Fill ``stage`` (and ``filtered``) in place."""
    curriculum = cfg.curriculum
    key = "semantic_entropy" if curriculum.entropy == "discrete" else "weighted_semantic_entropy"
    keep = [r for r in scores if not (curriculum.drop_zero_signal and r["pass_rate"] in (0.0, 1.0))]
    for r in scores:
        r["filtered"] = True
    if keep:
        values = np.array([r[key] for r in keep], dtype=np.float64)
        if not np.isfinite(values).all():
            raise CurationError(
                f"curriculum.entropy={curriculum.entropy!r} is not finite for every problem (missing log-probs?)"
            )
        stages = assign_stages(
            values, n_stages=curriculum.n_stages, method=curriculum.method, thresholds=curriculum.thresholds
        )
        if curriculum.order == "random":  # the same stage sizes, without the SE ordering (an ablation)
            stages = np.random.default_rng(cfg.seed).permutation(stages)
        for r, s in zip(keep, stages, strict=True):
            r["filtered"], r["stage"] = False, int(s)


def curriculum_table(cfg: SentConfig, scores: pa.Table, stage: int) -> pa.Table:
    """One stage of the curriculum in verl's schema, sorted by SE (then index), built column by
    column from the scores table (a million rows take seconds, not minutes)."""
    import pyarrow.compute as pc

    key = "semantic_entropy" if cfg.curriculum.entropy == "discrete" else "weighted_semantic_entropy"
    rows = scores.filter(pc.equal(scores["stage"], stage)).sort_by([(key, "ascending"), ("index", "ascending")])
    n = rows.num_rows
    users = [cfg.prompt.template.format(problem=p) for p in rows["problem"].to_pylist()]
    if cfg.prompt.system:
        roles = pa.array(["system", "user"] * n)
        contents = pa.array([x for u in users for x in (cfg.prompt.system, u)])
        per_row = 2
    else:
        roles, contents, per_row = pa.array(["user"] * n), pa.array(users, pa.string()), 1
    messages = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
    prompt = pa.ListArray.from_arrays(pa.array(np.arange(0, per_row * n + 1, per_row, dtype=np.int32)), messages)
    reward = pa.StructArray.from_arrays(
        [pa.array(["rule"] * n), rows["answer"].combine_chunks()], names=["style", "ground_truth"]
    )
    extra = pa.StructArray.from_arrays(
        [
            rows["index"].combine_chunks(),
            rows["id"].combine_chunks(),
            rows["semantic_entropy"].combine_chunks(),
            rows["weighted_semantic_entropy"].combine_chunks(),
            rows["pass_rate"].combine_chunks(),
            rows["n_classes"].combine_chunks(),
            pa.array(np.full(n, stage, dtype=np.int32)),
        ],
        names=["index", "id", "semantic_entropy", "weighted_semantic_entropy", "pass_rate", "n_classes", "stage"],
    )
    table = pa.Table.from_arrays(
        [rows["data_source"].combine_chunks(), prompt, pa.array([cfg.data.ability] * n), reward, extra],
        names=CURRICULUM_SCHEMA.names,
    )
    return table.cast(CURRICULUM_SCHEMA)


def write_stages(cfg: SentConfig, scores: pa.Table, out_dir: Path) -> None:
    """``stage-K/part-J.parquet`` for every stage, ``curriculum.shard_rows`` rows per shard."""
    shard = cfg.curriculum.shard_rows
    for stage in range(1, cfg.curriculum.n_stages + 1):
        table = curriculum_table(cfg, scores, stage)
        for j in range(0, table.num_rows, shard):
            write_table(
                table.slice(j, shard), out_dir / f"stage-{stage}" / f"part-{j // shard:05d}.parquet", CURRICULUM_SCHEMA
            )


# --------------------------------------------------------------------------------------------
# the phase
# --------------------------------------------------------------------------------------------


def curation_digest(cfg: SentConfig) -> str:
    """Digest of everything that decides a curation's output: its config sections, the seed and the
    content of the training data (so fresh data at the same path, e.g. on a retraining schedule, is
    curated anew instead of reusing the old curriculum)."""
    from sent.lineage import path_digest

    data = path_digest(cfg.data.train_path)
    return hashlib.sha256(f"{cfg.section_digest(*CONFIG_SECTIONS)}:seed={cfg.seed}:data={data}".encode()).hexdigest()


def default_out_dir(cfg: SentConfig, limit: int | None) -> Path:
    """``data/runs/curate-<config digest>``: the same configuration finds (and resumes) its run."""
    suffix = "" if limit is None else f"-limit{limit}"
    return Path("data/runs") / f"curate-{curation_digest(cfg)[:12]}{suffix}"


def _run_identity(cfg: SentConfig, limit: int | None) -> dict[str, Any]:
    return {
        "config_digest": curation_digest(cfg),
        "limit": limit,
        "train_path": cfg.data.train_path,
    }


def curate(cfg: SentConfig, *, out: str | Path | None = None, limit: int | None = None, sampler=None) -> CurationResult:
    """Run the curation phase; see the module docstring. A ``sampler`` passed in samples in this
    process, whatever ``sampling.executor`` says (as `sent.evaluation.evaluate_model`'s does)."""
    t_start = time.perf_counter()
    limit = limit if limit is not None else cfg.data.limit
    check_limit(limit)  # before any directory is named after it
    if not Path(cfg.data.train_path).exists():  # before a model is loaded
        raise CurationError(f"input not found: {cfg.data.train_path} (data.train_path)")
    out_dir = Path(out) if out is not None else default_out_dir(cfg, limit)
    identity = _run_identity(cfg, limit)
    finished = finished_curation(out_dir, identity)
    if finished is not None:
        return finished
    from sent.models import check_model_path

    scoring = cfg.semantic.scoring_model or cfg.model
    check_model_path(scoring.tokenizer or scoring.path)  # before a directory is made for the run
    path = Path(cfg.data.train_path)
    rows = list(read_rows(path, cfg.data.format, limit))
    if not rows:
        raise CurationError(f"{path}: the file is empty (no rows to curate)")
    with exclusive(out_dir, "sent curate"):
        # the holder of the lock before us may have finished this very curation
        return finished_curation(out_dir, identity) or _curate_locked(cfg, out_dir, identity, rows, sampler, t_start)


def finished_curation(out_dir: Path, identity: dict[str, Any]) -> CurationResult | None:
    """The finished curation of this identity in ``out_dir``, or None when there is none yet."""
    if not (out_dir / MANIFEST).exists():
        return None
    manifest = load_manifest(out_dir)
    if manifest.get("identity") == identity:
        logger.info("curation already complete at %s; reusing it", out_dir)
        return CurationResult(out_dir, manifest, reused=True)
    raise CurationError(f"{out_dir} holds a finished curation of another configuration; choose another --out")


def _curate_locked(
    cfg: SentConfig,
    out_dir: Path,
    identity: dict[str, Any],
    rows: list[tuple[int, Any, str]],
    sampler,
    t_start: float,
) -> CurationResult:
    """The curation proper, under ``out_dir``'s lock."""
    state_path = out_dir / STATE
    if state_path.exists():
        state = _read_state(state_path)
        if state is None:
            raise CurationError(
                f"{state_path} is not a curation's state (not a JSON object): the directory was damaged; "
                "choose another --out, or remove it to start again"
            )
        if state.get("identity") != identity:
            raise CurationError(
                f"{out_dir} holds an unfinished curation of another configuration; choose another --out"
            )
        logger.info("resuming the curation in %s", out_dir)
    elif any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise CurationError(f"{out_dir} exists and is not a curation directory; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"identity": identity, "config": cfg.public_dump()}, state_path)

    # 1. validation
    model_cfg = cfg.semantic.scoring_model or cfg.model
    from sent.models import load_tokenizer

    tokenizer = load_tokenizer(model_cfg.tokenizer or model_cfg.path, trust_remote_code=model_cfg.trust_remote_code)
    path = Path(cfg.data.train_path)
    problems, rejected = validate_rows(cfg, path, rows, tokenizer)
    if len(problems) + len(rejected) != len(rows):
        raise AssertionError("validation lost rows")  # counts in = accepted + rejected, always
    write_rows([r.__dict__ for r in rejected], out_dir / "rejected.parquet", REJECTED_SCHEMA)
    share = len(rejected) / max(1, len(rows))
    if share > cfg.data.max_rejected_fraction or not problems:
        first = "; ".join(f"row {r.row} {r.field!r}: {r.reason}" for r in rejected[:3])
        raise CurationError(
            f"{path}: {len(rejected)} of {len(rows)} rows rejected ({share:.1%} > data.max_rejected_fraction="
            f"{cfg.data.max_rejected_fraction:.1%}); first: {first}; all in {out_dir / 'rejected.parquet'}"
        )
    logger.info("%s: %d rows, %d accepted, %d rejected", path, len(rows), len(problems), len(rejected))

    # 2. sampling in resumable chunks
    size, n = cfg.sampling.chunk_size, cfg.sampling.n
    chunks = [problems[i : i + size] for i in range(0, len(problems), size)]
    parts = [out_dir / "samples" / f"part-{ci:05d}.parquet" for ci in range(len(chunks))]
    missing = {ci: chunk for ci, chunk in enumerate(chunks) if not _chunk_complete(parts[ci], len(chunk) * n)}
    if not missing:
        t_sampling = 0.0
    elif cfg.sampling.executor == "ray" and sampler is None:  # a sampler passed in samples here
        t_sampling = _sample_on_ray(cfg, missing, parts, out_dir)
    else:
        t_sampling = _sample_locally(cfg, missing, parts, out_dir, sampler, model_cfg)
    samples = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else SAMPLES_SCHEMA.empty_table()

    # 3. scores and stages
    scores = score_problems(cfg, problems, samples)
    counts = {
        "input_rows": len(rows),
        "accepted": len(problems),
        "rejected": len(rejected),
        "samples": samples.num_rows,
        # what the grader could not decide within its budgets (see semantic.problem_budget_s)
        "se_undecided_problems": sum(r["se_undecided"] > 0 for r in scores),
        "grade_undecided_samples": sum(r["grade_undecided"] for r in scores),
    }
    timing = {"sampling": t_sampling}
    manifest = publish_curriculum(cfg, out_dir, identity, scores, counts, timing, t_start)
    state_path.unlink(missing_ok=True)
    logger.info("curation written to %s", out_dir)
    return CurationResult(out_dir, manifest, reused=False)


def _read_state(path: Path) -> dict[str, Any] | None:
    """A curation's state file; None when it is not a JSON object (a damaged directory)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def write_part(table: pa.Table, path: Path) -> None:
    """A chunk's samples, sealed (its digest beside it) and then put in place atomically: a kill
    at any point leaves the part missing or whole and sealed, never unsealed."""
    write_table(table, path, SAMPLES_SCHEMA, before_replace=lambda tmp: seal_file(path, written=tmp))


def _sample_locally(
    cfg: SentConfig, missing: dict[int, list[Problem]], parts: list[Path], out_dir: Path, sampler, model_cfg
) -> float:
    """The missing chunks one after another in this process, each written to its part file."""
    judge = configured_judge(cfg.semantic)
    if cfg.semantic.judge == "math":
        warm_up_verifier()  # the verifiers import sympy while the model loads
    t_sampling = 0.0
    for ci, chunk in missing.items():
        if sampler is None:
            sampler = build_sampler(cfg, model_cfg)
        t0 = time.perf_counter()
        table = sample_chunk(cfg, chunk, sampler, ci, judge)
        t_sampling += time.perf_counter() - t0
        write_part(table, parts[ci])
        logger.info("sampled chunk %d/%d (%d problems)", ci + 1, len(parts), len(chunk))
        interrupt.check(f"after sampling chunk {ci + 1}/{len(parts)} of {out_dir} (a rerun resumes from there)")
    return t_sampling


def _sample_on_ray(cfg: SentConfig, missing: dict[int, list[Problem]], parts: list[Path], out_dir: Path) -> float:
    """The missing chunks through the Ray Data pipeline (`sent.sampling.ray_data`), each written
    to its part file as it arrives: the same checkpoints as the local loop."""
    from sent.sampling.ray_data import sample_chunks

    def write(ci: int, table: pa.Table) -> None:
        if table.num_rows != len(missing[ci]) * cfg.sampling.n:
            raise CurationError(f"chunk {ci}: {table.num_rows} samples, expected {len(missing[ci]) * cfg.sampling.n}")
        write_part(table, parts[ci])
        done.append(ci)
        logger.info("sampled chunk %d/%d on Ray (%d of %d missing done)", ci + 1, len(parts), len(done), len(missing))
        interrupt.check(f"after sampling chunk {ci + 1}/{len(parts)} of {out_dir} (a rerun resumes from there)")

    done: list[int] = []
    return sample_chunks(cfg, missing, write)


def publish_curriculum(
    cfg: SentConfig,
    out_dir: Path,
    identity: dict[str, Any],
    scores: list[dict[str, Any]],
    counts: dict[str, int],
    timing: dict[str, float],
    t_start: float,
    *,
    staged: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Stages (unless ``staged``: the rows carry theirs), ``scores.parquet``, shards, plots and
    ``manifest.json`` (last) from scored problems."""
    if not staged:
        assign(cfg, scores)
    write_rows(scores, out_dir / "scores.parquet", SCORES_SCHEMA)
    k_stages = cfg.curriculum.n_stages
    write_stages(cfg, pq.read_table(out_dir / "scores.parquet"), out_dir)
    from sent.plots import plot_curation

    plot_curation(scores, out_dir)
    kept = [r for r in scores if not r["filtered"]]
    key = "semantic_entropy" if cfg.curriculum.entropy == "discrete" else "weighted_semantic_entropy"
    se = np.array([r[key] for r in kept])  # the entropy that ordered the curriculum
    fail = np.array([1 - r["pass_rate"] for r in kept])
    corr = float(np.corrcoef(se, fail)[0, 1]) if len(kept) > 1 and se.std() > 0 and fail.std() > 0 else float("nan")
    summary = stage_summary(se, np.array([r["stage"] for r in kept]), k_stages)
    for s in summary:
        if s["count"] == 0:
            logger.warning(
                "curriculum stage %d is empty: too few distinct SE values for %d stages", s["stage"], k_stages
            )
    listed = sorted(
        [
            p
            for p in out_dir.rglob("*")
            if p.is_file() and p.name not in (MANIFEST, STATE) and not p.name.startswith(".")
        ]
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "sent_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "identity": identity,
        "config": cfg.public_dump(),
        "counts": {**counts, "filtered": sum(r["filtered"] for r in scores)},
        "curriculum": {
            "n_stages": k_stages,
            "method": cfg.curriculum.method,
            "order": cfg.curriculum.order,
            "entropy": cfg.curriculum.entropy,
            "stages": summary,
            # a legal outcome (e.g. every problem has the same SE): said here, refused by training
            "empty_stages": [s["stage"] for s in summary if s["count"] == 0],
            "pearson_r_se_vs_1_minus_pass_rate": corr,
            "mean_pass_rate": float(np.mean([r["pass_rate"] for r in scores])) if scores else float("nan"),
        },
        "timing_s": {"total": time.perf_counter() - t_start, **timing},
        **extra,
        "files": [file_entry(p, out_dir) for p in listed],
    }
    return write_json(manifest, out_dir / MANIFEST)


def start_derived(
    cfg: SentConfig, out_dir: Path, identity: dict[str, Any], *, foreign: str, keep: tuple[str, ...] = ()
) -> Path:
    """Under ``out_dir``'s lock, before a curriculum derived from another is written there: what an
    interrupted run of the same ``identity`` left is removed (all but ``keep``, which resumes), a
    directory of anything else is refused (``foreign`` says why), and the state file is written.
    Returns the state file's path, to remove once the manifest is written."""
    state_path = out_dir / STATE
    if state_path.is_file() and (_read_state(state_path) or {}).get("identity") == identity:
        for p in out_dir.iterdir():  # cheap to redo from the start
            if p.name not in (LOCK_FILE, STATE, *keep):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise CurationError(f"{out_dir} exists and {foreign}")
    write_json({"identity": identity, "config": cfg.public_dump()}, state_path)
    return state_path


SCORING_SECTIONS = tuple(s for s in CONFIG_SECTIONS if s != "curriculum")
"""What decides the scores of a curation (the curriculum only stages them)."""


def restage(cfg: SentConfig, scored_dir: str | Path, out_dir: str | Path) -> CurationResult:
    """A curriculum by ``cfg.curriculum`` from the scores of the finished curation in
    ``scored_dir``, without sampling anything: ``out_dir`` gets its own ``scores.parquet`` (with
    the new stages), shards, plots and manifest (``restaged_from`` names the source). The other
    sections that decide the scores (model, data, prompt, sampling, semantic, seed) must equal the
    source's. A finished restaging of the same source and curriculum is reused."""
    t_start = time.perf_counter()
    scored_dir, out_dir = Path(scored_dir), Path(out_dir)
    source = load_manifest(scored_dir)  # verifies every file of the source
    mine = cfg.public_dump()
    differ = [s for s in SCORING_SECTIONS if source["config"].get(s) != mine[s]]
    if source["config"].get("seed") != mine["seed"]:
        differ.append("seed")
    if differ:
        raise CurationError(
            f"{scored_dir} was scored with other {', '.join(differ)} settings: only the curriculum section may differ"
        )
    identity = {
        "restaged_from": source["identity"],
        "curriculum": cfg.section_digest("curriculum"),
        "seed": cfg.seed,
    }
    finished = finished_curation(out_dir, identity)
    if finished is not None:
        return finished
    with exclusive(out_dir, "sent curate (restage)"):
        finished = finished_curation(out_dir, identity)
        if finished is not None:
            return finished
        state_path = start_derived(cfg, out_dir, identity, foreign="is not a curation directory; choose another --out")
        scores = pq.read_table(scored_dir / "scores.parquet").to_pylist()
        for r in scores:
            r["filtered"], r["stage"] = False, None
        counts = {k: v for k, v in source["counts"].items() if k != "filtered"}
        manifest = publish_curriculum(
            cfg, out_dir, identity, scores, counts, {}, t_start, restaged_from=str(scored_dir.resolve())
        )
        state_path.unlink()
    logger.info("curriculum restaged from %s into %s", scored_dir, out_dir)
    return CurationResult(out_dir, manifest, reused=False)
