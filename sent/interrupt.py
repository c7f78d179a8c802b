"""Stopping cleanly on SIGTERM or SIGINT: at the next safe point, with everything closed.

A scheduler (Kubernetes, Slurm, a Prefect worker) stops a job with SIGTERM and kills it a little
later; a user presses Ctrl-C. Either way the run should end as "interrupted", not vanish:
checkpoints written, run records closed, MLflow runs marked KILLED. `handle_signals` turns the
first SIGTERM/SIGINT into a request; the long loops of the library call `check` at their safe
points (after a training step and its checkpoint, after a curation chunk, between pipeline steps),
which raises `Interrupted` there. A second signal stops at once (`KeyboardInterrupt`).

`Interrupted` is an ``Exception``, so that Prefect records the flow as Failed with its message,
but it is raised only at safe points, never inside a computation that might swallow it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: signal.Signals | None = None


class Interrupted(Exception):
    """A SIGTERM or SIGINT asked the run to stop; raised at a safe point."""

    def __init__(self, signum: int, where: str) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> signal.Signals | None:
    """The signal that asked to stop, if one did."""
    return _requested


def check(where: str) -> None:
    """Raise `Interrupted` if a stop was requested (call only where stopping is safe)."""
    if _requested is not None:
        raise Interrupted(_requested, where)


class StopNow(KeyboardInterrupt):
    """A second signal: stop at once (no safe point); the process exits 128 + the signal."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"second {signal.Signals(signum).name}: stopping at once")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handle(signum: int, _frame) -> None:
    global _requested
    if _requested is not None:
        raise StopNow(signum)
    _requested = signal.Signals(signum)
    logger.warning("%s received: stopping at the next safe point (send it again to stop at once)", _requested.name)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT request a stop at the next safe point (see the module
    docstring). Off the main thread, where Python cannot take signals, this does nothing."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None


def reset() -> None:
    """Forget a request (tests, and a process that goes on after handling one)."""
    global _requested
    _requested = None
