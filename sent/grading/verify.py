"""The symbolic tier: math-verify in killable child processes (`sent.grading.worker`), so that
every comparison is bounded in time and works from any thread."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time

from sent.grading.limits import CACHE_SIZE

logger = logging.getLogger(__name__)


class _Worker:
    """One `sent.grading.worker` process and its pipes. Starting one does not wait for it: the
    first question waits for its ready line, within that question's deadline."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sent.grading.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env=env,
        )
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes (PIPE above)
        self.stdin, self.stdout = stdin, stdout
        self._buf = b""
        self.ready = False

    def _read_line(self, deadline: float) -> dict | None:
        fd = self.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died
                raise RuntimeError("the math-verify worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, deadline: float) -> bool:
        if not self.ready:
            self.ready = self._read_line(deadline) is not None
        return self.ready

    def ask(self, a: str, b: str, deadline: float) -> bool | None:
        """True/False, or None when the worker did not answer before ``deadline`` (monotonic)."""
        self.stdin.write((json.dumps({"a": a, "b": b}) + "\n").encode())
        reply = self._read_line(deadline)
        return None if reply is None else bool(reply.get("eq"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL without waiting (the caller's deadline is running); a daemon thread reaps it."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        threading.Thread(target=self.proc.wait, daemon=True, name="sent-verifier-reaper").start()


class _VerifierPool:
    """A few verifier processes shared by all threads of this process.

    A call borrows an idle worker, and kills it when it overruns the caller's deadline; a
    replacement is started at once, in the background, so that the next call finds it importing
    (or ready) instead of paying the whole start-up. Every wait (for a free worker, for a
    starting one, for the answer) counts against the one deadline. After ``fork`` (Ray,
    DataLoader workers) the child builds its own pool instead of sharing the parent's pipes.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pid = os.getpid()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._start_failures = 0
        for _ in range(size):
            self._idle.put(None)

    def _spawn(self) -> _Worker | None:
        if self._start_failures >= 3:
            return None
        try:
            worker = _Worker()
        except OSError as exc:
            self._start_failures += 1
            logger.error("cannot start the math-verify worker (%s); symbolic checks are off", exc)
            return None
        with self._lock:
            self._all = [w for w in self._all if w.alive()]
            self._all.append(worker)
        return worker

    def warm_up(self, wait_s: float = 0.0) -> None:
        """Start every worker now (they import sympy in the background); with ``wait_s``, wait up
        to that long for them to be ready, outside any check's budget."""
        held: list[_Worker | None] = []
        while True:
            try:
                held.append(self._idle.get_nowait())
            except queue.Empty:
                break
        workers = [self._spawn() if w is None or not w.alive() else w for w in held]
        deadline = time.monotonic() + wait_s
        for w in workers:
            if w is not None and wait_s > 0:  # None: a worker that could not start (symbolic checks off)
                w.wait_ready(deadline)
            self._idle.put(w)

    def equivalent(self, a: str, b: str, deadline: float) -> bool | None:
        """math-verify's symmetric verdict, or None when it was not reached before ``deadline``."""
        try:
            worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            logger.warning("no verifier free in time; %r vs %r stays undecided", a, b)
            return None
        try:
            if worker is None or not worker.alive():
                worker = self._spawn()
                if worker is None:
                    return None
            if not worker.wait_ready(deadline):
                return None  # still starting: the next call goes on waiting for it
            result = worker.ask(a, b, deadline)
            if result is None:
                logger.warning("symbolic check of %r vs %r ran out of time; undecided", a[:200], b[:200])
                worker.kill()
                worker = self._spawn()
            return result
        except Exception as exc:
            logger.warning("verifier failed on %r vs %r: %s", a[:200], b[:200], exc)
            if worker is not None:
                worker.kill()
            worker = self._spawn()
            return None
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            for w in self._all:
                w.kill()
            self._all.clear()


WORKERS_ENV = "SENT_VERIFY_WORKERS"
"""How `semantic.verify_workers` reaches processes that only load the reward function (verl's
reward workers): the process that starts them sets it from the config."""
DEFAULT_WORKERS = 2

_pool: _VerifierPool | None = None
_pool_lock = threading.Lock()
_workers: int | None = None  # set by warm_up_verifier(workers=...); else the environment's, else 2


def _get_pool() -> _VerifierPool:
    global _pool
    with _pool_lock:
        size = _workers if _workers is not None else int(os.environ.get(WORKERS_ENV, DEFAULT_WORKERS))
        if _pool is None or _pool._pid != os.getpid() or _pool.size != max(1, size):
            if _pool is not None and _pool._pid == os.getpid():
                _pool.close()
            _pool = _VerifierPool(max(1, size))
        return _pool


def warm_up_verifier(wait_s: float = 0.0, *, workers: int | None = None) -> None:
    """Start the math-verify workers now, so that the first symbolic check does not pay their
    start-up (sympy's import) out of its time budget. Curation, training and evaluation call it
    while their model loads, with ``workers`` from the config (`semantic.verify_workers`); a
    process that only grades (a Ray grading task) waits ``wait_s``."""
    global _workers
    if workers is not None:
        _workers = workers
    _get_pool().warm_up(wait_s)


@atexit.register
def _close_pool() -> None:
    if _pool is not None and _pool._pid == os.getpid():
        _pool.close()


def _brace_depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c == "{":
            depth += 1
            best = max(best, depth)
        elif c == "}":
            depth -= 1
    return best


_symbolic_cache: dict[tuple[str, str], bool] = {}


def _symbolic_equivalent(a: str, b: str, deadline: float) -> bool | None:
    """math-verify on ``(a, b)`` in sorted order (so cache and result are symmetric); decided
    results are cached, undecided ones are not (a later call with time left may decide them)."""
    key = (a, b)
    if key in _symbolic_cache:
        return _symbolic_cache[key]
    result = _get_pool().equivalent(a, b, deadline)
    if result is not None:
        if len(_symbolic_cache) >= CACHE_SIZE:
            _symbolic_cache.clear()
        _symbolic_cache[key] = result
    return result
