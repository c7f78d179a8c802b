"""Retries on transient I/O only: a missing file, bad data or a configuration error fails the
same way again, so only connection, timeout and transient-errno failures are retried."""

from __future__ import annotations

import errno
from typing import Any

IO_RETRIES = 2
IO_RETRY_DELAYS = [2, 10]  # seconds: exponential-ish backoff
_TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ESTALE,
}


def is_transient_io(exc: BaseException) -> bool:
    """Connection and timeout errors, and OS errors with a transient errno (EIO, EAGAIN, ...).
    Missing files, bad data and configuration errors are not retried: they fail the same way again."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def retry_on_io(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient I/O failures."""
    try:
        state.result()
    except BaseException as exc:  # classified, never swallowed: the state stays failed
        return is_transient_io(exc)
    return False


IO_RETRY_OPTIONS: dict[str, Any] = {
    "retries": IO_RETRIES,
    "retry_delay_seconds": IO_RETRY_DELAYS,
    "retry_condition_fn": retry_on_io,
}
