"""Calling a Prefect flow from the command line: Prefect's environment defaults for our
processes, the temporary server's guard (`sent.prefect_server`), and advice in place of a
traceback when the Prefect API cannot be used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sent.errors import SentError


def prefect_environment() -> None:
    """Defaults for Prefect in our processes (set before Prefect is imported; the user's values win):
    our loggers reach the Prefect UI, and no telemetry (the ephemeral server's sqlite locks on it)."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sent,tasks,flows")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default of 20 s is not enough for the ephemeral server on a loaded 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def prefect_unavailable(exc: BaseException) -> str | None:
    """What to do when the Prefect API cannot be used (None for any other error)."""
    text = str(exc)
    if "Failed to reach API at" in text:
        return (
            f"{text.splitlines()[0]}: start the server (`prefect server start`) or point PREFECT_API_URL at a "
            "running one; unset PREFECT_API_URL to run against a temporary local server"
        )
    if "ephemeral Prefect API server" in text:
        return (
            "the temporary local Prefect server did not start in time (a loaded machine?): start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api, or allow it longer with "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        )
    return None


class FlowRefused(Exception):
    """A Prefect API that cannot be used; its message is the advice to print."""

    exit_code = 2


def run_flow(flow: Callable[..., Any], **params: Any) -> Any:
    """Call a Prefect flow; a Prefect API that cannot be used becomes `FlowRefused` with the advice
    to print (a step the flow cannot run raises its own `SentError`)."""
    from sent.prefect_server import guard_temporary_server

    try:
        guard_temporary_server()  # a kill -9 of this process stops Prefect's temporary server too
        return flow(**params)
    except RuntimeError as exc:
        if isinstance(exc, SentError):
            raise
        advice = prefect_unavailable(exc)
        if advice is None:
            raise
        raise FlowRefused(advice) from None
