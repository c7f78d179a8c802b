"""The run record: ``<run>/run.json``, the lineage of a pipeline run.

It holds the config and overrides, the steps asked for, the MLflow parent run, the Prefect flow
run, the status and every artefact the run produced or reused (path, digest, the MLflow run that
produced it). Written atomically and merged key by key (`write_record`), read back by a later run
that continues in the same directory or reuses its artefacts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sent.data_contract import write_json
from sent.redaction import redact
from sent.steps import StepError
from tasks.context import Artefact, RunContext

RECORD = "run.json"


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The record of ``run_dir``; a `StepError` when it has none or it is not valid JSON."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise StepError(f"{run_dir} is not a pipeline run (no {RECORD})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StepError(f"{path}: not valid JSON ({exc})") from None


def recorded_artefacts(run_dir: str | Path) -> dict[str, Artefact]:
    """The artefacts ``run_dir``'s record lists, by step."""
    return {k: Artefact.model_validate(v) for k, v in read_record(run_dir).get("artefacts", {}).items()}


def write_record(ctx: RunContext, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into the run's record (top-level keys), stamp it and write it atomically,
    with any URI's credentials masked (an error's text may quote one)."""
    path = Path(ctx.run_dir) / RECORD
    record = read_record(ctx.run_dir) if path.is_file() else {}
    record.update(updates)
    record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return write_json(redact(record), path)


def default_run_dir(root: Path) -> Path:
    """``<root>/data/runs/pipeline-<start>-<flow run id>``: the same for every retry of a flow run."""
    from prefect.runtime import flow_run

    flow_id = flow_run.id
    if flow_id:  # stable across retries of the same flow run
        started = flow_run.scheduled_start_time
        stamp = started.strftime("%Y%m%d-%H%M%S") if started is not None else time.strftime("%Y%m%d-%H%M%S")
        return root / "data" / "runs" / f"pipeline-{stamp}-{str(flow_id)[:8]}"
    return root / "data" / "runs" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}"
