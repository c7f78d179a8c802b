"""The temporary Prefect server ends with the process that started it.

Without ``PREFECT_API_URL``, Prefect starts a local server (uvicorn) as a child process for the
flow and stops it at exit (``atexit``). A ``kill -9`` of the pipeline runs no exit handler, so
that server was left running, holding a port and its sqlite database, until someone found it.

`guard_temporary_server` starts the server that Prefect would start (the same per-process
instance, so the flow uses it) and a small watchdog process beside it. The watchdog holds a pidfd
of the server and the read end of a pipe whose write end only this process holds: when this
process ends, however it ends, the kernel closes the pipe and the watchdog stops the server
(SIGTERM, then SIGKILL after a grace). A server already stopped by Prefect's own exit handler is
simply gone, and the watchdog leaves.

Run as ``python -m sent.prefect_server PID`` it is that watchdog.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys

GRACE_S = 5.0
"""How long the server gets to stop after SIGTERM before it is killed."""

_watchdog: subprocess.Popen | None = None  # kept for this process's life: its stdin is the pipe


def guard_temporary_server() -> int | None:
    """Start Prefect's temporary server now, watched; the server's PID, or None when Prefect uses
    a configured server (``PREFECT_API_URL``) or none. Raises Prefect's RuntimeError when the
    server does not start in time (`sent.flow_calls.prefect_unavailable` turns it into advice)."""
    global _watchdog
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client takes when it needs a server
    server.start()
    if server.server_process is None:
        return None
    pid = server.server_process.pid
    if not hasattr(os, "pidfd_open"):  # not Linux: Prefect's exit handler is all there is
        return pid
    if _watchdog is None or _watchdog.poll() is not None:
        _watchdog = subprocess.Popen(
            [sys.executable, "-m", "sent.prefect_server", str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group leaves it to do its work
            close_fds=True,
        )
    return pid


def _exited(pidfd: int, timeout: float) -> bool:
    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)


def watch(pid: int) -> None:
    """Wait until stdin closes (the starting process ended), then stop ``pid``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    while os.read(sys.stdin.fileno(), 4096):  # nothing is ever written: EOF is the only event
        pass
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not _exited(pidfd, GRACE_S):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    os.close(pidfd)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
