"""The base of every error a user can cause and fix.

A `SentError` is raised for input that cannot be used as given: a config key, a data row, a
missing model, a locked directory, a step that cannot run. Its message names the file, row, field
or setting and says what to do, so the command line prints it as one line, without a traceback,
and exits with `exit_code`. Each subclass keeps the built-in base that describes it best
(`ValueError` for bad values, `RuntimeError` for a run that cannot go on, `OSError` for a missing
file), so ``except ValueError`` in a caller keeps working.

Exit codes of ``sent`` (docs/training-and-evaluation.md lists them too): 0 done; 1 an unexpected error (a bug: the
traceback is printed); 2 a `SentError` or a command line that does not parse; 130 and 143
stopped by SIGINT or SIGTERM at a safe point (rerun the same command to resume).
"""

from __future__ import annotations


class SentError(Exception):
    """An error in what the user asked for or gave; the message is the line to print."""

    exit_code: int = 2
