"""Digests that prove a file of resumable state is what was written.

Resumable state (a curation's sampled parts, a stage's checkpoints) is read back by a later run.
A file that has the right shape but other bytes (a flipped bit on disk, a partial copy) would be
trusted by a shape check and change results in silence; a parquet or safetensors reader may also
fail on it with an error that names no file. So each piece is sealed when written: a part gets a
hidden ``.<name>.sha256`` beside it (a finished curation's manifest, which lists no hidden file,
vouches for the parts from then on), a checkpoint directory a ``digests.json`` of its files. Before
resuming from a piece, its digests are checked: a damaged piece is recomputed where it can be
(a curation's chunk, an older checkpoint), else refused with the file named.
"""

from __future__ import annotations

import json
from pathlib import Path

from sent.data_contract import sha256_file, write_json, write_text

DIGESTS = "digests.json"
SIDECAR = ".sha256"


def sidecar(path: Path) -> Path:
    """Where ``path``'s digest is kept: ``.<name>.sha256`` beside it."""
    return path.with_name(f".{path.name}{SIDECAR}")


def seal_file(path: Path, written: Path | None = None) -> str:
    """Write ``path``'s digest beside it (`sidecar`); return the digest. With ``written`` (the
    temporary file that is about to be renamed to ``path``), its bytes are sealed before ``path``
    exists, so a kill between the two leaves no unsealed file: a missing one, or a sealed one."""
    digest = sha256_file(written or path)
    write_text(digest + "\n", sidecar(path))
    return digest


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (missing, unsealed, or not the bytes that were sealed);
    None when it is intact."""
    seal = sidecar(path)
    if not path.is_file():
        return f"{path} is missing"
    if not seal.is_file():
        return f"{path} has no digest ({seal.name}): it was not written completely by this version"
    if seal.read_text(encoding="utf-8").strip() != sha256_file(path):
        return f"{path} is not the file that was written (its sha256 differs from {seal.name})"
    return None


def seal_directory(directory: Path) -> Path:
    """``digests.json`` in ``directory``: the sha256 of every file under it (written last)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != DIGESTS)
    digests = {str(p.relative_to(directory)): sha256_file(p) for p in files}
    path = directory / DIGESTS
    write_json(digests, path)
    return path


def directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be trusted: no ``digests.json``, a listed file missing or changed,
    or an unlisted file; None when every file is as sealed."""
    path = directory / DIGESTS
    if not path.is_file():
        return f"{directory} has no {DIGESTS}: it was not written completely by this version"
    try:
        digests = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{path} is not readable JSON"
    if not isinstance(digests, dict):
        return f"{path} is not a mapping of files to digests"
    for name, digest in digests.items():
        file = directory / name
        if not file.is_file():
            return f"{file} is missing"
        if sha256_file(file) != digest:
            return f"{file} is not the file that was written (its sha256 differs from {DIGESTS})"
    extra = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    unlisted = [name for name in extra if name != DIGESTS and name not in digests]
    if unlisted:
        return f"{directory / unlisted[0]} was not part of the checkpoint"
    return None
