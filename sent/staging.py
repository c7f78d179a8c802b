"""From sampled answers to the curriculum's files: each problem's semantic entropy and pass rate
(`score_problems`), its stage (`assign`: low SE first, optionally without the problems that have no
GRPO signal), and the stages written as Parquet shards in verl's schema (`write_stages`). The stage
rule itself is `sent.curriculum.assign_stages`, a pure function of the values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sent.config import SentConfig
from sent.curriculum import assign_stages
from sent.data_contract import CURRICULUM_SCHEMA, ContractError, write_table
from sent.problems import CurationError, Problem
from sent.semantic import discrete_entropy, weighted_entropy


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
