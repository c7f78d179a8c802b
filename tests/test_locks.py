"""`sent.locks`: one writer per directory, and no lock file left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sent.locks import LOCK_FILE, LockedError, exclusive


def test_a_second_writer_is_refused_with_the_holder_named_and_the_file_goes_with_the_holder(tmp_path):
    with exclusive(tmp_path, "curation"):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"PID {os.getpid()} ")
        refused = rf"{tmp_path} is being written by another curation \(PID {os.getpid()} "
        with pytest.raises(LockedError, match=refused), exclusive(tmp_path, "curation"):
            pass
        assert (tmp_path / LOCK_FILE).is_file()  # the refused contender removed nothing
    assert not (tmp_path / LOCK_FILE).exists()
    with exclusive(tmp_path, "curation"):  # and the directory is free again
        pass


def test_a_lock_left_by_kill_9_blocks_nobody_and_is_removed_by_the_next_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time\nfrom sent.locks import exclusive\nwith exclusive({str(tmp_path)!r}, 'x'):\n"
            "    print('held', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"PID {holder.pid} "), exclusive(tmp_path, "x"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # kill -9 left the file, not the lock
    with exclusive(tmp_path, "x"):
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"PID {os.getpid()} ")
    assert sorted(tmp_path.iterdir()) == []


def test_a_contender_that_locked_a_removed_file_locks_the_new_one(tmp_path, monkeypatch):
    """The race that removing the file opens: B opens the lock file, A removes it and lets go,
    B's flock then succeeds on a file no path names. B must notice and lock the file at the path,
    or a third writer C would hold the new file at the same time."""
    import sent.locks

    path = tmp_path / LOCK_FILE
    real_flock = sent.locks.fcntl.flock
    calls = []

    def flock_after_a_release(fd, op):
        if op & sent.locks.fcntl.LOCK_EX and not calls:  # the first attempt: A lets go meanwhile
            path.unlink()
        calls.append(os.fstat(fd).st_ino)
        return real_flock(fd, op)

    path.write_text("PID 1 on elsewhere\n")
    monkeypatch.setattr(sent.locks.fcntl, "flock", flock_after_a_release)
    with exclusive(tmp_path, "x"):
        assert len(calls) == 2  # it locked, saw the path had gone, and locked again
        assert os.stat(path).st_ino == calls[-1]  # it holds the file that the path names
        monkeypatch.setattr(sent.locks.fcntl, "flock", real_flock)
        with pytest.raises(LockedError), exclusive(tmp_path, "x"):  # so a third writer is refused
            pass
