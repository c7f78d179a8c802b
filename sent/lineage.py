"""Content digests of artefacts and code: the inputs of cache keys and lineage records.

`path_digest` identifies what a path holds, not where it is:

- a file: its sha256;
- a curation directory (``manifest.json``): the sha256 of its manifest, which itself lists the
  sha256 of every file (so no shard is read again);
- any other directory (model weights, checkpoints): a sha256 over each file's relative path and
  size, and its content when the file is at most ``full_hash_bytes`` (64 MiB); larger files
  (multi-GB weight shards) contribute their size and modification time instead, so a 15 GB
  checkpoint is fingerprinted in milliseconds;
- anything else (a hub id such as ``Qwen/Qwen2.5-7B``): ``name:`` plus the string.

Digests are memoised per process on (path, size, mtime) of every file involved.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from sent import __version__
from sent.data_contract import MANIFEST, sha256_file

FULL_HASH_BYTES = 64 << 20
_memo: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = ("file", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(path)
    return _memo[key]


def path_digest(path: str | Path, *, full_hash_bytes: int = FULL_HASH_BYTES) -> str:
    """See the module docstring."""
    p = Path(path)
    if p.is_file():
        return _file_digest(p)
    if not p.is_dir():
        return "name:" + hashlib.sha256(str(path).encode()).hexdigest()
    if (p / MANIFEST).is_file():
        return _file_digest(p / MANIFEST)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        st = f.stat()
        rel = f.relative_to(p).as_posix()
        part = _file_digest(f) if st.st_size <= full_hash_bytes else f"mtime:{st.st_mtime_ns}"
        h.update(f"{rel}\0{st.st_size}\0{part}\n".encode())
    return h.hexdigest()


@functools.cache
def code_version() -> str:
    """``<version>+<sha256 of the sent, tasks and flows sources>[:12]``: changes with any code edit."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    for package in (root, root.parent / "tasks", root.parent / "flows"):
        if package.is_dir():
            for f in sorted(package.rglob("*.py")):
                h.update(f.relative_to(root.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def digest_of(*parts: object) -> str:
    """sha256 of the reprs of some values (already-digested inputs, config digests, names)."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()
