"""An expected stop is one line, not a traceback.

A SIGTERM or SIGINT stops a run at a safe point by raising `sent.interrupt.Interrupted`, and the
command line then prints one ``error: stopped by SIGTERM ...`` line. Prefect's flow and task
engines log every exception that ends a run with its traceback, which buries that line under
thirty others (and stores them in Prefect's database). `quiet_expected_stops` turns those
records into one line each; every other exception keeps its traceback.
"""

from __future__ import annotations

import logging

from sent.interrupt import Interrupted

_ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _ExpectedStop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Interrupted):
            record.msg, record.args = "stopped: %s", (str(exc),)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_expected_stops() -> None:
    """Install the filter on Prefect's flow-run and task-run loggers (once)."""
    for name in _ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedStop) for f in logger.filters):
            logger.addFilter(_ExpectedStop())
