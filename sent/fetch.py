"""`sent data fetch`: the paper's training set and six benchmarks, in the files the presets read.

From the hub (the sources of `sent.data_sources`, each pinned to the commit it was read at) or,
for a machine without hub access, from a local copy (``--from DIR``: ``<name>.jsonl``,
``<name>.parquet`` or a ``datasets`` ``save_to_disk`` directory ``<name>/``, in the source's columns
or already in ours), through the same mapping. Writes, atomically:
- ``<out>/datasets/dapo-math-17k.parquet``: ``{id, problem, answer, source_id}``, duplicate
  problems removed (whitespace and case folded; the first answer kept, conflicting answers
  counted);
- ``<out>/benchmarks/<name>.jsonl``: ``{id, problem, answer[, source_id, level]}``; a benchmark
  whose size is not its known size is refused;
- ``<out>/manifest.json``: each file's source (repository, config, split, revision, or the local
  path), rows and sha256, merged with what an earlier fetch wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sent.data_contract import sha256_file, write_json, write_table, write_text
from sent.data_sources import SOURCES, Source, SourceError, is_ours, map_row

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAIN_SCHEMA = pa.schema(
    [("id", pa.string()), ("problem", pa.string()), ("answer", pa.string()), ("source_id", pa.string())]
)


@dataclass
class Fetched:
    """One written file: what it holds and where it came from."""

    name: str
    path: Path
    rows: int
    origin: dict[str, Any]
    read: int = 0
    duplicates: int = 0
    conflicts: int = 0

    def line(self) -> str:
        where = self.origin.get("local") or f"{self.origin['repo']}@{str(self.origin.get('revision'))[:12]}"
        text = f"{self.name:<14} {self.rows:>7,} rows  {self.path}  (from {where})"
        if self.read:
            text += (
                f"; {self.read:,} read, {self.duplicates:,} duplicate problems removed"
                f" ({self.conflicts:,} with another answer than the kept one's)"
            )
        return text


# --------------------------------------------------------------------------------------------
# reading a source: (label for errors, rows)
# --------------------------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield f"{path}:{line_no}", json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise SourceError(f"{path}:{line_no}: not a JSON row ({exc})") from None


def _table_rows(label: str, rows: Any) -> Iterator[tuple[str, Any]]:
    for number, row in enumerate(rows, start=1):
        yield f"{label}: row {number}", row


def _pick_split(ds: Any, source: Source, where: str) -> Any:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if source.split in ds:
            return ds[source.split]
        if len(ds) == 1:
            return next(iter(ds.values()))
        raise SourceError(f"{where}: no split {source.split!r} among {sorted(ds)}")
    return ds


def local_path(source: Source, directory: Path) -> Path:
    """``source``'s local copy in ``directory``: ``<name>.jsonl``, ``<name>.parquet`` or ``<name>/``."""
    candidates = [directory / f"{source.name}.jsonl", directory / f"{source.name}.parquet", directory / source.name]
    found = [p for p in candidates if p.exists()]
    if not found:
        raise SourceError(f"{source.name}: none of {', '.join(str(p) for p in candidates)} exists")
    return found[0]


def local_rows(source: Source, directory: Path) -> tuple[Path, list[str], Iterator[tuple[str, Any]]]:
    """(path, columns, rows) of ``source``'s local copy in ``directory``."""
    path = local_path(source, directory)
    if path.suffix == ".jsonl":
        first = next((row for _, row in _jsonl_rows(path)), None)
        columns = list(first) if isinstance(first, Mapping) else []
        return path, columns, _jsonl_rows(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return path, table.schema.names, _table_rows(str(path), table.to_pylist())
    import datasets

    try:
        ds = _pick_split(datasets.load_from_disk(str(path)), source, str(path))
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: not a `datasets` save_to_disk directory ({exc})") from None
    return path, list(ds.column_names), _table_rows(str(path), ds)


def hub_rows(source: Source, revision: str | None) -> tuple[dict[str, Any], list[str], Iterator[tuple[str, Any]]]:
    """(origin, columns, rows) of ``source`` on the hub, read at one commit (the one ``revision``
    names, or the newest), which the manifest records."""
    try:
        import datasets
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(source.repo, revision=revision).sha
        ds = datasets.load_dataset(source.repo, source.config, split=source.split, revision=sha)
    except ImportError as exc:
        raise SourceError(f"{source.name}: reading the hub needs `datasets` and `huggingface_hub` ({exc})") from None
    except Exception as exc:  # offline, no such repository or revision: say so, with the way around it
        raise SourceError(
            f"{source.name}: cannot read {source.repo} from the hub ({type(exc).__name__}: {exc}); "
            "on a machine without hub access, copy the data and use --from DIR"
        ) from None
    origin = {"repo": source.repo, "config": source.config, "split": source.split, "revision": sha}
    return origin, list(ds.column_names), _table_rows(f"{source.repo}:{source.split}", ds)


# --------------------------------------------------------------------------------------------
# mapping and writing
# --------------------------------------------------------------------------------------------


def map_rows(
    source: Source, columns: Sequence[str], rows: Iterator[tuple[str, Any]], where: str
) -> tuple[list[dict], bool]:
    """(our rows in source order, whether the file was in our schema already). The file is in our
    schema or in the source's columns; anything else, or a row that does not map, is an error
    naming the file, the row and the field."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        raise SourceError(f"{where}: no rows")
    cols = set(columns)
    ours = is_ours(cols, first[1] if isinstance(first[1], Mapping) else None)
    if not ours and not set(source.columns) <= cols:
        missing = sorted(set(source.columns) - cols)
        raise SourceError(
            f"{where}: column(s) {', '.join(map(repr, missing))} missing: neither {source.repo}'s columns "
            f"({', '.join(source.columns)}) nor ours ({', '.join(('id', 'problem', 'answer'))})"
        )
    out: list[dict] = []
    seen: set[str] = set()
    for index, (label, row) in enumerate([first, *rows]):
        if not isinstance(row, Mapping):
            raise SourceError(f"{label}: a row must be an object, got {type(row).__name__}")
        try:
            mapped = map_row(source, row, index, ours=ours)
        except SourceError as exc:
            raise SourceError(f"{label}: {exc}") from None
        if source.kind == "benchmark":
            if mapped["id"] in seen:
                raise SourceError(f"{label}: field 'id': duplicate id {mapped['id']!r}")
            seen.add(mapped["id"])
        out.append(mapped)
    return out, ours


def deduplicate(rows: list[dict], *, renumber: str | None) -> tuple[list[dict], int, int]:
    """(first row of each problem, duplicates removed, duplicates whose answer differs from the
    kept one's). Problems match with whitespace collapsed and case folded. ``renumber``: ids
    ``<renumber>-NNNNNN`` in the kept order (for source-format rows)."""
    kept: dict[str, dict] = {}
    conflicts = 0
    for row in rows:
        key = " ".join(row["problem"].split()).casefold()
        if key not in kept:
            kept[key] = row
        elif row["answer"].strip() != kept[key]["answer"].strip():
            conflicts += 1
    unique = list(kept.values())
    if renumber is not None:
        unique = [{**row, "id": f"{renumber}-{i:06d}"} for i, row in enumerate(unique)]
    return unique, len(rows) - len(unique), conflicts


def write_source(source: Source, rows: list[dict], out: Path) -> Path:
    path = out / source.filename
    if source.kind == "benchmark":
        write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), path)
    else:
        table = pa.Table.from_pylist([{k: row.get(k) for k in TRAIN_SCHEMA.names} for row in rows], schema=TRAIN_SCHEMA)
        write_table(table, path, TRAIN_SCHEMA)
    return path


def fetch_one(source: Source, out: Path, *, from_dir: Path | None = None, revision: str | None = None) -> Fetched:
    if from_dir is not None:
        path, columns, rows = local_rows(source, from_dir)
        origin: dict[str, Any] = {"local": str(path.resolve())}
        where = str(path)
    else:
        origin, columns, rows = hub_rows(source, revision)
        where = f"{source.repo}:{source.split}"
    mapped, ours = map_rows(source, columns, rows, where)
    read = duplicates = conflicts = 0
    if source.kind == "train":
        read = len(mapped)
        mapped, duplicates, conflicts = deduplicate(mapped, renumber=None if ours else source.name)
    elif source.rows is not None and len(mapped) != source.rows:
        raise SourceError(f"{where}: {source.name} has {len(mapped)} rows, but the benchmark has {source.rows}")
    path = write_source(source, mapped, out)
    return Fetched(source.name, path, len(mapped), origin, read=read, duplicates=duplicates, conflicts=conflicts)


def fetch(
    names: Sequence[str] = (),
    *,
    out: str | Path = "data",
    from_dir: str | Path | None = None,
    revision: str | None = None,
) -> list[Fetched]:
    """Fetch ``names`` (default: all of `SOURCES`) into ``out`` and record them in its manifest.
    Every name is checked before anything is read; each file is written whole or not at all."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise SourceError(f"unknown data set(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    names = list(names or SOURCES)
    if revision is not None and len(names) != 1:
        raise SourceError(f"--revision is one repository's commit: fetch one data set with it, not {len(names)}")
    if from_dir is not None:
        if not Path(from_dir).is_dir():
            raise SourceError(f"--from {from_dir}: not a directory")
        for name in names:
            local_path(SOURCES[name], Path(from_dir))
    out = Path(out)
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] = json.loads(manifest_path.read_text("utf-8")) if manifest_path.is_file() else {}
    files = manifest.setdefault("files", {})
    done: list[Fetched] = []
    for name in names:
        fetched = fetch_one(
            SOURCES[name], out, from_dir=None if from_dir is None else Path(from_dir), revision=revision
        )
        entry = {"name": name, "source": fetched.origin, "rows": fetched.rows, "sha256": sha256_file(fetched.path)}
        if fetched.read:
            entry |= {
                "rows_read": fetched.read,
                "duplicates_removed": fetched.duplicates,
                "conflicting_answers": fetched.conflicts,
            }
        files[str(fetched.path.relative_to(out))] = entry
        write_json(manifest, manifest_path)  # after each file: an interrupted fetch keeps what it wrote
        logger.info("%s", fetched.line())
        done.append(fetched)
    return done
