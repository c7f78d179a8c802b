"""MLflow lineage of pipeline runs. This is the only module that imports MLflow.

A pipeline run is one MLflow *parent* run; each phase it executes (curation, each training
stage, each evaluation) is a *child* run tagged ``mlflow.parentRunId``, so the MLflow UI shows
the tree. Everything goes through an explicit `MlflowClient` and run ids (never MLflow's
thread-local "active run"), because Prefect may run tasks in worker threads or processes.

Where runs are stored: ``tracking.tracking_uri`` from the config, else ``$MLFLOW_TRACKING_URI``,
else ``sqlite:////<project>/data/mlflow.db`` (absolute, so every process of a run agrees). The
plain file store (``./mlruns``, ``file:``) is refused: MLflow 3.13+ rejects it. Experiments this
project creates keep their artefacts under ``tracking.artifact_root`` (``data/mlartifacts``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from sent.errors import SentError
from sent.redaction import redact, redact_text, redact_uri

logger = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
_CUT = "...[truncated]"
_PACKAGES = ("sent", "torch", "transformers", "verl", "vllm", "prefect", "mlflow")


class TrackingError(SentError, RuntimeError):
    """A tracking configuration that cannot work (the message says which setting)."""


def resolve_tracking_uri(configured: str | None = None, root: str | Path = ".") -> str:
    """The tracking URI a run uses: config, else ``$MLFLOW_TRACKING_URI``, else the project's sqlite file."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{(Path(root) / 'data' / 'mlflow.db').resolve()}"
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri!r} is MLflow's file store, which MLflow 3.13+ rejects; use a database "
            "(sqlite:////abs/path/mlflow.db) or a server (http://host:5000) in tracking.tracking_uri or "
            "MLFLOW_TRACKING_URI"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:////") and uri != "sqlite://":
        # sqlite:///relative.db depends on the working directory of each process: pin it
        uri = f"sqlite:///{(Path(root) / uri[len('sqlite:///') :]).resolve()}"
    if scheme == "sqlite":
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def metric_name(key: str) -> str:
    """MLflow's metric names allow letters, digits and ``_-. /:``: ``avg@8`` -> ``avg_at_8``."""
    return re.sub(r"[^\w\-. /:]", "_", key.replace("@", "_at_"))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and scalars become JSON text."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return flat


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git_commit(root: str | Path = ".") -> str:
    """``<sha>`` or ``<sha>-dirty`` of the checkout at ``root``; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def lineage_tags(root: str | Path = ".", **extra: Any) -> dict[str, str]:
    tags = {"sent.git_commit": git_commit(root)}
    tags.update({f"sent.version.{k}": v for k, v in package_versions().items()})
    tags.update({f"sent.{k}": str(v) for k, v in extra.items() if v is not None})
    return tags


REACH_TIMEOUT_S = 10.0
"""How long opening a connection to a tracking server may take before the run fails."""
# MLflow retries a failed request 7 times with exponential backoff (minutes of silence); a run
# should rather fail fast with the reason. The user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail at once, with the way out, when an HTTP(S) tracking server cannot be connected to."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TrackingError(
            f"the MLflow tracking server {redact_uri(uri)} cannot be reached ({reason}); start it "
            "(`mlflow server --host HOST --port PORT`), point tracking.tracking_uri or MLFLOW_TRACKING_URI at a "
            "running one, or unset both to track into the local sqlite store data/mlflow.db"
        ) from None


class _RedactedClient:
    """An `MlflowClient` whose errors never carry the tracking URI's credentials: a server that
    dies mid-run raises errors with ``http://user:secret@host/...`` in their text, which Prefect
    would print and store. Each call's error becomes a `TrackingError` with its text redacted."""

    def __init__(self, client: mlflow.MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # MLflow's own, or a connection error from requests/urllib3
                text = str(exc)
                if redact_text(text) == text:
                    raise  # nothing to hide: the error as it was (callers may catch MLflow's own type)
                raise TrackingError(f"MLflow {name}: {redact_text(text)}") from None

        return call


class Tracker:
    """Explicit-id access to one MLflow experiment (see the module docstring)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | Path | None = None) -> None:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if redact_uri(tracking_uri) != tracking_uri:
            # MLflow prints "View run ... at: <URL>" with the URI's userinfo when a run ends
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        check_reachable(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client: Any = _RedactedClient(mlflow.MlflowClient(tracking_uri=tracking_uri))
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = None
            if artifact_root is not None and not tracking_uri.startswith(("http://", "https://", "databricks")):
                location = Path(artifact_root).resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except mlflow.exceptions.MlflowException:  # created meanwhile by another process
                again = self.client.get_experiment_by_name(experiment)
                if again is None:
                    raise
                self.experiment_id = again.experiment_id

    # ---------------------------------------------------------------- runs

    def start_run(
        self,
        name: str,
        *,
        parent_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        all_tags = {k: redact_text(str(v)) for k, v in (tags or {}).items()}
        if parent_id is not None:
            all_tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def end_run(self, run_id: str, *, failed: bool = False, killed: bool = False) -> None:
        """FINISHED, FAILED, or KILLED (stopped by a signal)."""
        self.client.set_terminated(run_id, status="KILLED" if killed else "FAILED" if failed else "FINISHED")

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, redact_text(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Flat params (nested mappings are flattened); over-long values are cut with a marker."""
        flat = flatten(redact(dict(params)))
        items = []
        for key, value in sorted(flat.items()):
            if len(value) > MAX_PARAM_VAL_LENGTH:
                value = value[: MAX_PARAM_VAL_LENGTH - len(_CUT)] + _CUT
            items.append(Param(key, value))
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Finite numeric metrics at one step (NaN and inf are skipped: MLflow's stores disagree on them)."""
        now = int(time.time() * 1000)
        items = [
            Metric(metric_name(k), float(v), now, int(step or 0))
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])

    def log_dataset(
        self,
        run_id: str,
        *,
        name: str,
        digest: str,
        source: str,
        context: str,
        schema: Any = None,
        profile: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record an input dataset (``mlflow.log_input``): name, content digest, source, schema and profile."""
        dataset = Dataset(
            name=name,
            digest=digest[:36],
            source_type="local" if "://" not in source else source.split("://", 1)[0],
            source=json.dumps({"uri": source}),
            schema=json.dumps(schema, default=str) if schema is not None else None,
            profile=json.dumps(dict(profile), default=str) if profile is not None else None,
        )
        input_tags = [InputTag("mlflow.data.context", context), *(InputTag(k, v) for k, v in (tags or {}).items())]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, input_tags)])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path or path.name)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    # ---------------------------------------------------------------- reading back (reports, tests)

    def children(self, parent_id: str) -> list:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000
        )

    def ui_link(self, run_id: str, ui_url: str | None = None) -> str:
        base = redact_uri(self.tracking_uri) if self.tracking_uri.startswith(("http://", "https://")) else ui_url
        return f"{(base or '').rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"


def tracker_for(cfg, root: str | Path = ".") -> Tracker:
    """The `Tracker` of a `SentConfig`'s tracking section."""
    tracking = cfg.tracking
    return Tracker(
        resolve_tracking_uri(tracking.tracking_uri, root), tracking.experiment, Path(root) / tracking.artifact_root
    )
