"""A curriculum that follows the model (``curriculum.mode: rescored``): before stage k + 1, stage k's
model answers the problems not yet trained, and they are staged again by the SE of its answers.

SENT orders the problems once, by the base model's SE. After a stage the policy is another model,
and a problem's SE for it is another number. `rescore` takes a finished curriculum (the curation,
or the re-staging before this one) and the weights of stage k:

- the pool is the problems of stages k+1..K (problems filtered out stay out; trained ones stay put);
- it is curated anew, as a curation of its own (``sampled/``: `sent.curate.curate` with stage k's
  weights as the model, the same sampling, judge and seed, into K - k stages), so sampling is
  chunked, resumable and runs on any ``sampling.backend`` / ``executor`` as in curation;
- the result is a whole curriculum directory like the curation's: stages 1..k as they were trained,
  stages k+1..K from the new scores. Training reads stage k+1 from it (`sent.steps.curriculum_step`).

``manifest.json`` records what moved (``rescored``): how many pool problems changed stage, and each
remaining stage's SE under the old and the new scores.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sent.config import SentConfig
from sent.curate import (
    CurationError,
    CurationResult,
    curate,
    finished_curation,
    publish_curriculum,
    start_derived,
)
from sent.curriculum import stage_summary
from sent.data_contract import load_manifest, write_rows
from sent.locks import exclusive

logger = logging.getLogger(__name__)
SAMPLED = "sampled"
"""The pool's own curation, inside the re-staged curriculum's directory."""
POOL = "pool.parquet"
POOL_SCHEMA = pa.schema(
    [("id", pa.string()), ("problem", pa.string()), ("answer", pa.string()), ("data_source", pa.string())]
)


def pool_config(cfg: SentConfig, model_dir: str | Path, pool_path: Path, stage: int) -> SentConfig:
    """The pool's curation: ``cfg`` with stage ``stage``'s weights as the model, the pool as the
    data (`POOL_SCHEMA`'s columns) and the stages that remain (K - stage)."""
    remaining = cfg.curriculum.n_stages - stage
    thresholds = cfg.curriculum.thresholds[stage:] if cfg.curriculum.thresholds is not None else None
    fields = cfg.data.fields.model_copy(
        update={"problem": "problem", "answer": "answer", "id": "id", "source": "data_source"}
    )
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"path": str(model_dir), "tokenizer": None}),
            "data": cfg.data.model_copy(
                update={"train_path": str(pool_path), "format": "parquet", "fields": fields, "limit": None}
            ),
            "curriculum": cfg.curriculum.model_copy(
                update={"n_stages": remaining, "thresholds": thresholds, "mode": "static"}
            ),
        }
    )


def split_pool(scores: list[dict[str, Any]], stage: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept as they are, to be re-scored): the pool is the problems staged after ``stage``; the
    trained stages and the filtered problems keep their rows."""
    pool = [r for r in scores if not r["filtered"] and r["stage"] > stage]
    ids = {r["id"] for r in pool}
    return [r for r in scores if r["id"] not in ids], pool


def merge_scores(
    kept: list[dict[str, Any]], pool: list[dict[str, Any]], rescored: list[dict[str, Any]], stage: int
) -> list[dict[str, Any]]:
    """The whole curriculum's score rows: ``kept`` as they were, and every pool problem with its
    new scores and its new stage (stage + its stage among the remaining ones), at its old index."""
    by_id = {r["id"]: r for r in rescored}
    missing = [r["id"] for r in pool if r["id"] not in by_id]
    if missing or len(by_id) != len(pool):
        raise CurationError(f"the re-scored pool lost problems: {missing[:5]} ({len(missing)} in all)")
    merged = list(kept)
    for old in pool:
        new = dict(by_id[old["id"]])
        new["index"] = old["index"]
        new["stage"] = None if new["filtered"] else stage + new["stage"]
        merged.append(new)
    return sorted(merged, key=lambda r: r["index"])


def moved(pool: list[dict[str, Any]], merged: list[dict[str, Any]], cfg: SentConfig, stage: int) -> dict[str, Any]:
    """What re-staging changed: pool problems that changed stage (or were filtered now), and the SE
    of every remaining stage under the old scores and under the new."""
    key = "semantic_entropy" if cfg.curriculum.entropy == "discrete" else "weighted_semantic_entropy"
    new = {r["id"]: r for r in merged}
    changed = sum(1 for r in pool if new[r["id"]]["stage"] != r["stage"])
    k_max = cfg.curriculum.n_stages

    def by_stage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        staged = [r for r in rows if r["stage"] is not None]
        summary = stage_summary(np.array([r[key] for r in staged]), np.array([r["stage"] for r in staged]), k_max)
        return summary[stage:]

    return {
        "after_stage": stage,
        "pool": len(pool),
        "changed_stage": changed,
        "filtered_now": sum(1 for r in pool if new[r["id"]]["filtered"]),
        "stages_before": by_stage(pool),
        "stages_after": by_stage([new[r["id"]] for r in pool]),
        "mean_pass_rate_before": float(np.mean([r["pass_rate"] for r in pool])) if pool else float("nan"),
        "mean_pass_rate_after": float(np.mean([new[r["id"]]["pass_rate"] for r in pool])) if pool else float("nan"),
    }


def rescore(
    cfg: SentConfig, curriculum_dir: str | Path, model_dir: str | Path, stage: int, out_dir: str | Path
) -> CurationResult:
    """Re-stage the problems after ``stage`` of the curriculum in ``curriculum_dir`` by the SE of the
    model in ``model_dir`` (stage ``stage``'s final weights) into ``out_dir``. A finished re-staging
    of the same inputs is reused; an interrupted one resumes its sampling."""
    from sent.lineage import path_digest

    t_start = time.perf_counter()
    curriculum_dir, out_dir = Path(curriculum_dir), Path(out_dir)
    if not 1 <= stage < cfg.curriculum.n_stages:
        raise CurationError(
            f"rescore after stage {stage}: stages 1..{cfg.curriculum.n_stages - 1} have a stage after them"
        )
    source = load_manifest(curriculum_dir)  # verifies every file of the source
    if source["curriculum"]["n_stages"] != cfg.curriculum.n_stages:
        raise CurationError(
            f"{curriculum_dir} has {source['curriculum']['n_stages']} stages and curriculum.n_stages is "
            f"{cfg.curriculum.n_stages}: re-stage a curriculum of this config"
        )
    identity = {
        "rescored_from": source["identity"],
        "after_stage": stage,
        "model": path_digest(model_dir),
        "config": cfg.section_digest("sampling", "semantic", "curriculum", "prompt"),
        "seed": cfg.seed,
    }
    finished = finished_curation(out_dir, identity)
    if finished is not None:
        return finished
    with exclusive(out_dir, "rescore"):
        finished = finished_curation(out_dir, identity)
        if finished is not None:
            return finished
        # an interrupted publish is redone; the pool's sampling resumes
        state_path = start_derived(
            cfg,
            out_dir,
            identity,
            foreign="is not a re-staging of this curriculum; choose another directory",
            keep=(SAMPLED, POOL),
        )
        scores = pq.read_table(curriculum_dir / "scores.parquet").to_pylist()
        kept, pool = split_pool(scores, stage)
        if not pool:
            raise CurationError(f"{curriculum_dir}: no problem is staged after stage {stage}; nothing to re-score")
        pool_path = out_dir / POOL
        write_rows([{k: r[k] for k in POOL_SCHEMA.names} for r in pool], pool_path, POOL_SCHEMA)
        sub = curate(pool_config(cfg, model_dir, pool_path, stage), out=out_dir / SAMPLED)
        rescored = pq.read_table(out_dir / SAMPLED / "scores.parquet").to_pylist()
        merged = merge_scores(kept, pool, rescored, stage)
        change = moved(pool, merged, cfg, stage)
        counts = {k: v for k, v in source["counts"].items() if k != "filtered"}
        timing = {"sampling": sub.manifest["timing_s"].get("sampling", 0.0)}
        manifest = publish_curriculum(
            cfg,
            out_dir,
            identity,
            merged,
            counts,
            timing,
            t_start,
            staged=True,
            rescored={**change, "from": str(curriculum_dir.resolve()), "model": str(Path(model_dir).resolve())},
        )
        state_path.unlink()
    logger.info(
        "re-staged %d problems after stage %d (%d changed stage) into %s",
        change["pool"],
        stage,
        change["changed_stage"],
        out_dir,
    )
    return CurationResult(out_dir, manifest, reused=False)
