"""One writer per output directory: an exclusive lock that names its holder.

Two ``sent curate`` runs on one output directory would both sample everything, and two trainers
of one stage would overwrite each other's checkpoints. Each writer therefore holds an advisory
``flock`` on ``<dir>/.lock`` while it works; a second writer fails at once with the holder's PID.
The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
stale lock file never blocks anyone: the file stays, the lock does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from sent.errors import SentError

LOCK_FILE = ".lock"


class LockedError(SentError, RuntimeError):
    """The directory is being written by another process (the message names it)."""


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 256, 0).decode("utf-8", errors="replace").strip()
        if text:
            return text
    return "unknown PID"


@contextlib.contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the directory) for the ``with`` block; `LockedError`
    when another process holds it. ``what`` names the work for the message ("curation")."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise LockedError(f"{directory} is a file, not a directory: choose another output directory")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{directory} is being written by another {what} ({_holder(fd)}); wait for it to finish, "
                "or write elsewhere"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield directory
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
