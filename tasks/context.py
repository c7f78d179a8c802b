"""A pipeline run as the tasks see it: the run context (config, directory, steps, MLflow run)
and the artefacts that travel between tasks as records (a path plus a content digest), never as
data. `show_library_logs` lets the library's progress reach a flow's logs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sent.config import SentConfig
from sent.config_loading import load_config
from sent.lineage import path_digest
from sent.steps import StepError

LIBRARY_LOGGERS = ("sent", "tasks", "flows")


def show_library_logs() -> None:
    """Prefect hands its handlers to the loggers in PREFECT_LOGGING_EXTRA_LOGGERS but leaves their
    level at the root's WARNING: without INFO, the library's progress (SFT steps, sampled chunks)
    never reaches a flow's logs. A level someone set is kept. Called when a flow starts."""
    for name in LIBRARY_LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)


class Artefact(BaseModel):
    """A file or directory produced (or used) by a pipeline step, identified by its content digest."""

    kind: str = Field(description="model | curriculum | evaluation")
    step: str = Field(description="the step that produced it: bootstrap, curate, train:K, eval, eval:base, base")
    path: str
    digest: str
    mlflow_run_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, step: str, path: str | Path, **kwargs: Any) -> Artefact:
        p = Path(path)
        return cls(kind=kind, step=step, path=str(p.resolve() if p.exists() else path), digest=path_digest(p), **kwargs)

    def problem(self) -> str | None:
        """Why this artefact can no longer be used (None when it is intact)."""
        p = Path(self.path)
        if self.digest.startswith("name:"):
            return None  # a hub id: nothing local to check
        if not p.exists():
            return f"{self.step} {self.kind} {self.path} no longer exists"
        if path_digest(p) != self.digest:
            return f"{self.step} {self.kind} {self.path} changed since it was recorded"
        return None

    def verified(self) -> Artefact:
        reason = self.problem()
        if reason is not None:
            raise StepError(f"{reason}; rerun the step that produces it")
        return self


def produced(ctx: RunContext, compute_s: float) -> dict[str, Any]:
    """Artefact metadata: which flow run made it and how long the library work took (the rest of a
    run's wall time is orchestration and tracking)."""
    return {"flow_run_id": ctx.flow_run_id, "compute_s": round(compute_s, 3)}


class RunContext(BaseModel):
    """One pipeline run: where it writes, what it runs, where it is tracked."""

    config: str
    overrides: list[str] = Field(default_factory=list)
    root: str = Field(description="the project directory; relative config paths resolve against it")
    run_dir: str
    steps: list[str]
    tracking_uri: str
    experiment: str
    mlflow_run_id: str
    reuse: str | None = None
    reused: dict[str, Artefact] = Field(default_factory=dict)
    flow_run_id: str | None = None
    started: float = Field(default_factory=time.time, description="when the run was opened (epoch seconds)")

    def load(self) -> SentConfig:
        return load_config(self.config, self.overrides)
