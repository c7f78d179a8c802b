"""The on-disk contract of a curation run, written once: schemas, atomic writes, the manifest.

A curation directory holds::

    rejected.parquet          input rows refused by validation, with the reason (REJECTED_SCHEMA)
    samples/part-*.parquet    every sampled response, graded and clustered (SAMPLES_SCHEMA)
    scores.parquet            one row per accepted problem (SCORES_SCHEMA)
    stage-K/part-*.parquet    the curriculum, in verl's RL dataset schema (CURRICULUM_SCHEMA)
    *.png                     plots
    manifest.json             written last: config, counts, per-stage SE summary, schema version,
                              and the sha256 and row count of every file above

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written file under a final name. `load_manifest` and `load_curriculum` verify the
manifest's checksums before returning anything.

The curriculum rows follow verl's ``RLHFDataset`` contract: ``data_source``, ``prompt`` (a chat
message list), ``ability``, ``reward_model {style, ground_truth}`` and ``extra_info``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sent.errors import SentError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

CURRICULUM_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])), nullable=False),
        pa.field("ability", pa.string(), nullable=False),
        pa.field("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())]), nullable=False),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("id", pa.string()),
                    ("semantic_entropy", pa.float64()),
                    ("weighted_semantic_entropy", pa.float64()),
                    ("pass_rate", pa.float64()),
                    ("n_classes", pa.int32()),
                    ("stage", pa.int32()),
                ]
            ),
            nullable=False,
        ),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("id", pa.string()),
        ("sample", pa.int32()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("logprob", pa.float64()),
        ("finish_reason", pa.string()),
        ("answer", pa.string()),
        ("correct", pa.bool_()),
        ("class_id", pa.int32()),
        # grading ran out of its per-response budget: "correct" is False for want of a decision
        ("grade_undecided", pa.bool_()),
        # the problem's comparisons left undecided by its clustering budget (the same on each of its samples)
        ("se_undecided", pa.int32()),
    ]
)

SCORES_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("id", pa.string()),
        ("data_source", pa.string()),
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("semantic_entropy", pa.float64()),
        ("weighted_semantic_entropy", pa.float64()),
        ("n_classes", pa.int32()),
        ("pass_rate", pa.float64()),
        ("answered_rate", pa.float64()),
        ("mean_tokens", pa.float64()),
        # comparisons the judge did not decide within the problem's budget (each counted as "different")
        ("se_undecided", pa.int32()),
        # samples whose grading did not decide within its budget (graded as wrong)
        ("grade_undecided", pa.int32()),
        ("filtered", pa.bool_()),
        ("stage", pa.int32()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("row", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("original", pa.string()),
    ]
)


class ContractError(SentError, ValueError):
    """A curation directory that does not match its manifest (missing, truncated or altered)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_replace(tmp: Path, path: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_table(
    table: pa.Table, path: Path, schema: pa.Schema, *, before_replace: Callable[[Path], object] | None = None
) -> dict[str, Any]:
    """Write ``table`` (cast to ``schema``, which must match its columns) atomically.
    ``before_replace`` sees the finished temporary file before it takes ``path``'s name (to seal
    it first: `sent.integrity.seal_file`). Returns the manifest entry ``{"rows", "sha256", "bytes"}``."""
    if table.schema.names != schema.names:
        raise ContractError(f"{path}: columns {table.schema.names} do not match the contract {schema.names}")
    table = table.cast(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    if before_replace is not None:
        before_replace(tmp)
    _atomic_replace(tmp, path)
    return {"rows": table.num_rows, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_rows(rows: Iterable[dict], path: Path, schema: pa.Schema) -> dict[str, Any]:
    return write_table(pa.Table.from_pylist(list(rows), schema=schema), path, schema)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (JSON has no NaN) and paths as strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(obj: Any, path: Path) -> Any:
    """Write ``json_safe(obj)`` atomically and return what was written."""
    safe = json_safe(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(safe, indent=2, allow_nan=False), encoding="utf-8")
    _atomic_replace(tmp, path)
    return safe


def write_text(text: str, path: Path) -> Path:
    """Write a text file (a report) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    _atomic_replace(tmp, path)
    return path


def file_entry(path: Path, root: Path) -> dict[str, Any]:
    entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        entry["rows"] = pq.ParquetFile(path).metadata.num_rows
    return {"path": str(path.relative_to(root)), **entry}


def load_manifest(run_dir: str | Path, *, verify: bool = True, only: str | None = None) -> dict[str, Any]:
    """The manifest of a curation directory, after checking every listed file's size and sha256
    (with ``only``, the files under that relative prefix, e.g. ``"stage-2/"``)."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise ContractError(f"{run_dir}: no {MANIFEST} (an unfinished or foreign directory)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ContractError(f"{path}: a manifest is a JSON object, got {type(manifest).__name__}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ContractError(
            f"{path}: schema version {manifest.get('schema_version')}, this code reads {SCHEMA_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, list) or not all(
        isinstance(e, dict) and {"path", "bytes", "sha256"} <= e.keys() for e in files
    ):
        raise ContractError(f"{path}: 'files' must list each file's path, bytes and sha256")
    if verify:
        for entry in files:
            if only is not None and not entry["path"].startswith(only):
                continue
            f = run_dir / entry["path"]
            if not f.is_file():
                raise ContractError(f"{run_dir}: {entry['path']} is listed in the manifest but missing")
            if f.stat().st_size != entry["bytes"]:
                size = f.stat().st_size
                raise ContractError(f"{run_dir}: {entry['path']} has {size} bytes, the manifest says {entry['bytes']}")
            if sha256_file(f) != entry["sha256"]:
                raise ContractError(f"{run_dir}: {entry['path']} does not match its sha256 in the manifest")
    return manifest


def stage_files(run_dir: str | Path, stage: int, manifest: dict | None = None) -> list[Path]:
    """The Parquet shards of one curriculum stage, in order (verl wants explicit file lists)."""
    run_dir = Path(run_dir)
    manifest = manifest or load_manifest(run_dir)
    n_stages = manifest["curriculum"]["n_stages"]
    if not 1 <= stage <= n_stages:
        raise ContractError(f"{run_dir}: stage {stage} does not exist (stages 1..{n_stages})")
    prefix = f"stage-{stage}/"
    return [run_dir / e["path"] for e in manifest["files"] if e["path"].startswith(prefix)]


def load_curriculum(run_dir: str | Path, stage: int) -> pa.Table:
    """All rows of one stage (its shards verified against the manifest), in curriculum order."""
    manifest = load_manifest(run_dir, only=f"stage-{stage}/")
    files = stage_files(run_dir, stage, manifest)
    if not files:
        return CURRICULUM_SCHEMA.empty_table()
    tables = [pq.read_table(f) for f in files]
    for f, t in zip(files, tables, strict=True):
        if not t.schema.equals(CURRICULUM_SCHEMA):
            raise ContractError(f"{f}: schema differs from the curriculum contract")
    return pa.concat_tables(tables)
