"""Offline curation: problems -> N sampled responses -> semantic entropy -> staged curriculum.

`curate` is the whole phase (``sent curate``):

1. Read the problems (JSONL, Parquet or a `datasets` directory, with a field mapping) and
   validate every row (`sent.problems`): missing, empty or wrongly typed problem/answer/id,
   duplicate ids, duplicate problems (after whitespace and case normalisation), chat prompts over
   the token budget. Rejected rows keep their original content and a reason in
   ``rejected.parquet``; input = accepted + rejected, always; too many rejections (default > 5 %)
   stop the run.
2. Sample N responses per problem in chunks (`sent.sampling.chunk`, or the Ray Data executor);
   each chunk is graded, clustered and written as ``samples/part-K.parquet`` (atomically). A rerun
   with the same configuration and output directory skips completed chunks, and sampling is
   seeded per chunk, so an interrupted run finishes with the same result as an uninterrupted one.
3. Score each problem (`sent.staging`): discrete and weighted semantic entropy, classes, pass rate
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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sent import __version__, interrupt
from sent.config import SentConfig
from sent.curriculum import stage_summary
from sent.data_contract import (
    MANIFEST,
    REJECTED_SCHEMA,
    SAMPLES_SCHEMA,
    SCHEMA_VERSION,
    SCORES_SCHEMA,
    file_entry,
    load_manifest,
    write_json,
    write_rows,
    write_table,
)
from sent.integrity import file_problem, seal_file
from sent.locks import LOCK_FILE, exclusive
from sent.problems import CurationError, Problem, check_limit, read_rows, validate_rows
from sent.redaction import redact
from sent.rewards import warm_up_verifier
from sent.sampling.chunk import sample_chunk
from sent.sampling.configured import build_sampler
from sent.semantic import configured_judge
from sent.staging import assign, score_problems, write_stages

logger = logging.getLogger(__name__)
STATE = "curation.json"
CONFIG_SECTIONS = ("model", "data", "prompt", "sampling", "semantic", "curriculum")


@dataclass(frozen=True)
class CurationResult:
    out_dir: Path
    manifest: dict[str, Any]
    reused: bool


# --------------------------------------------------------------------------------------------
# sampled chunks on disk (each sampled, graded and clustered by `sent.sampling.chunk`)
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

    # 2. scores and stages
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
        warm_up_verifier(workers=cfg.semantic.verify_workers)  # they import sympy while the model loads
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
    recorded = source["config"]  # as the source's version wrote it: compared by what it makes
    differ = [
        s for s in SCORING_SECTIONS if cfg.recorded_section_dump(s, recorded.get(s)) != redact(cfg.section_dump(s))
    ]
    if recorded.get("seed") != cfg.seed:
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
