"""An expected stop is one line, not a traceback; a cancel from Prefect ends Cancelled.

A SIGTERM or SIGINT stops a run at a safe point by raising `sent.interrupt.Interrupted`, and the
command line then prints one ``error: stopped by SIGTERM ...`` line. Prefect's flow and task
engines log every exception that ends a run with its traceback, which buries that line under
thirty others (and stores them in Prefect's database). `quiet_expected_stops` turns those
records into one line each; every other exception keeps its traceback.

A cancel from the Prefect UI reaches a worker's flow-run process as SIGTERM too, which our handler
(`sent.interrupt`) takes in place of Prefect's. Prefect's runner records its intent before it
sends the signal; `raise_if_cancelled` turns our stop into the `TerminationSignal` Prefect's engine
expects when that intent is a cancel, so the flow run ends Cancelled rather than Failed. A SIGTERM
from anywhere else carries no intent and ends as before.
"""

from __future__ import annotations

import logging
import signal

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


def cancelled_by_prefect() -> bool:
    """Whether the runner that sent this process its SIGTERM was asked to cancel the flow run."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:  # a Prefect without the control channel: no intent to read
        return False
    return get_intent() == "cancel"


def raise_if_cancelled(exc: BaseException) -> None:
    """Once a stopped flow has closed its run: raise Prefect's cancellation signal (from ``exc``)
    where a cancel asked for the stop; return otherwise, for the caller to re-raise ``exc``."""
    if isinstance(exc, Interrupted) and cancelled_by_prefect():
        from prefect.exceptions import TerminationSignal

        raise TerminationSignal(signal.SIGTERM) from exc
