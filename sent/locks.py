"""One writer per output directory: an exclusive lock that names its holder.

Two ``sent curate`` runs on one output directory would both sample everything, and two trainers
of one stage would overwrite each other's checkpoints. Each writer therefore holds an advisory
``flock`` on ``<dir>/.lock`` while it works; a second writer fails at once with the holder's PID.
The kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
stale lock file never blocks anyone. A holder that lets go removes the file (while still holding
its lock), so a refused or finished run leaves no ``.lock`` behind in a directory it did not own;
a contender that locked a file just removed this way sees that the path now names another file
(or none) and starts again.
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


def _lock(path: Path, directory: Path, what: str) -> int:
    """An open descriptor of ``path`` holding its flock, with ``path`` still naming that file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(
                f"{directory} is being written by another {what} ({holder}); wait for it to finish, or write elsewhere"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # the previous holder removed this file as it let go: lock the new one


@contextlib.contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the directory) for the ``with`` block; `LockedError`
    when another process holds it. ``what`` names the work for the message ("curation")."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise LockedError(f"{directory} is a file, not a directory: choose another output directory")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = _lock(path, directory, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield directory
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # still held: nobody can be holding the file being removed
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
