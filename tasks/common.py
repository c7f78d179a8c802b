"""What every pipeline task shares: the run context, artefacts passed by path and digest, the
content-addressed cache policy, retries on I/O only, and the ``gpu`` concurrency slot.

Artefacts travel between tasks as `Artefact` records (a path plus a content digest), never as
data. An expensive deterministic task is cached on a key built from its inputs' digests, the
config sections it reads and the code version (`ArtefactCache`); a cached result whose files
have since been removed or changed is not reused (the key moves on to a new generation), so a
retried flow run skips finished work and a cleaned data directory is rebuilt.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel, Field

from sent.config import SentConfig
from sent.config_loading import load_config
from sent.errors import SentError
from sent.interrupt import Interrupted
from sent.lineage import path_digest
from sent.steps import StepError

logger = logging.getLogger(__name__)
# Prefect hands its handlers to the loggers in PREFECT_LOGGING_EXTRA_LOGGERS but leaves their level at the
# root's WARNING: without this, the library's progress (SFT steps, sampled chunks) never reaches the logs.
for _name in ("sent", "tasks", "flows"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)
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


# --------------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------------


def _outputs_intact(result: Any) -> bool:
    return result.problem() is None if isinstance(result, Artefact) else True


@dataclass
class ArtefactCache(CachePolicy):
    """Cache key = ``key_fn(task parameters)`` (a digest of input digests, config sections and code
    version), plus a generation: a stored result whose artefacts are gone or changed is skipped,
    and the next free generation makes the task run again. ``key_fn`` returning None disables
    caching for that call."""

    key_fn: Callable[[dict[str, Any]], str | None] | None = None
    max_generations: int = 1000

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any):
        if self.key_fn is None:
            return None
        base = self.key_fn(inputs)
        if base is None:
            return None
        store = getattr(task_ctx, "result_store", None)
        name = task_ctx.task.name if task_ctx is not None else "task"
        for generation in range(self.max_generations):
            key = f"sent-{name}-{base[:40]}-g{generation}"
            if store is None or not store.exists(key):
                return key
            try:
                result = store.read(key).result
            except Exception:  # unreadable record (another Prefect version, a torn write): skip it
                continue
            if _outputs_intact(result):
                return key
            logger.info("cached %s result under %s points at missing or changed files; recomputing", name, key)
        return None


def cache_on(key_fn: Callable[[dict[str, Any]], str | None]) -> ArtefactCache:
    return ArtefactCache(key_fn=key_fn)


# --------------------------------------------------------------------------------------------
# retries and the GPU slot
# --------------------------------------------------------------------------------------------


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


def uses_gpu(cfg: SentConfig, phase: str) -> bool:
    """Whether a phase of this config runs on an accelerator."""
    from sent.models import resolve_device

    on_device = resolve_device(cfg.model.device).type != "cpu"
    if phase == "train":
        return on_device or (cfg.training.engine == "verl" and cfg.training.verl.device != "cpu")
    if phase in ("curate", "eval"):
        backend = _sampling_backend(cfg, phase)
        on_ray_gpus = cfg.sampling.executor == "ray" and cfg.ray.gpus_per_replica > 0
        return on_device or backend == "vllm" or on_ray_gpus
    return on_device


def _sampling_backend(cfg: SentConfig, phase: str) -> str:
    return cfg.evaluation.backend if phase == "eval" else cfg.sampling.backend


def server_configured() -> bool:
    """True when flows report to a Prefect server (``PREFECT_API_URL``), not an ephemeral one."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


GPU_LIMIT = "gpu"


class GpuLimitError(SentError, RuntimeError):
    """The Prefect ``gpu`` limit has fewer slots than a step's GPUs: it could never start."""


def gpu_slots(cfg: SentConfig, phase: str) -> int:
    """Slots of the ``gpu`` limit a phase holds: one per GPU it occupies, none for CPU work. verl's
    trainer holds its ``nnodes`` x ``n_gpus_per_node``; a vLLM engine in this process its
    tensor-parallel size; a Ray Data pipeline (``sampling.executor: ray``) ``ray.replicas`` x a
    replica's GPUs, rounded up (a vLLM engine's tensor-parallel size, or ``ray.gpus_per_replica``
    for hf actors); anything else on an accelerator, one."""
    from sent.sampling.ray_data import replica_gpus

    if not uses_gpu(cfg, phase):
        return 0
    if phase == "train":
        verl = cfg.training.verl
        on_verl = cfg.training.engine == "verl" and verl.device != "cpu"
        return verl.nnodes * verl.n_gpus_per_node if on_verl else 1
    if phase in ("curate", "eval"):
        backend = _sampling_backend(cfg, phase)
        if cfg.sampling.executor == "ray":
            return max(1, math.ceil(cfg.ray.replicas * replica_gpus(cfg, backend)))
        return cfg.sampling.tensor_parallel_size if backend == "vllm" else 1
    return 1


@contextmanager
def gpu_slot(cfg: SentConfig, phase: str, *, strict: bool | None = None) -> Iterator[bool]:
    """Hold the phase's slots (`gpu_slots`) of the Prefect global concurrency limit ``gpu`` while it
    runs: the limit is the GPUs of the work pool. Strict (a missing limit is an error) when a
    server is configured; CPU work takes no slot. A limit smaller than the phase's slots is an
    error at once (it would wait forever). Yields whether slots are held."""
    slots = gpu_slots(cfg, phase)
    if not slots:
        yield False
        return
    from prefect.concurrency.sync import concurrency

    strict = server_configured() if strict is None else strict
    _check_limit(phase, slots)
    with concurrency(GPU_LIMIT, occupy=slots, strict=strict):
        yield True


def gpu_limit() -> int | None:
    """The slots of the Prefect server's ``gpu`` limit; None when it has none."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit
        except ObjectNotFound:
            return None


def _check_limit(phase: str, slots: int) -> None:
    limit = gpu_limit()
    if limit is None:
        return  # strict: Prefect says it must be created; else the step runs without one
    if slots > limit:
        raise GpuLimitError(
            f"{phase} occupies {slots} GPUs, but the Prefect concurrency limit {GPU_LIMIT!r} has {limit} slots, "
            f"so it could never start: set it to the GPUs of the gpu work pool (prefect gcl update {GPU_LIMIT} "
            f"--limit {slots})"
        )


def level_groups(cfg: SentConfig) -> tuple[dict[str, dict[str, str]], set[str]]:
    """For paired comparisons (`sent.stats`): each configured benchmark's ``{id: level}`` (where its
    JSONL has levels), and the groups a toy run trains on (``{"toy L1", ...}``; empty otherwise)."""
    from sent.evaluation import EvaluationError, benchmark_levels, benchmark_path

    ev, toy = cfg.evaluation, cfg.toy
    levels = {}
    for name in ev.benchmarks:
        try:
            path = benchmark_path(name, ev.data_dir, toy.data_dir if toy is not None else None)
        except EvaluationError:
            continue
        if path.is_file():
            levels[name] = benchmark_levels(path)
    trained = {f"toy L{level}" for level in toy.rl_levels} if toy is not None else set()
    return levels, trained


# --------------------------------------------------------------------------------------------
# MLflow child runs
# --------------------------------------------------------------------------------------------


def log_curriculum_stage(tracker, run_id: str, curriculum_dir: str | Path, stage: int, manifest: dict, context: str):
    """One curriculum stage as an MLflow input dataset: its shards, their combined digest (from the
    manifest's sha256s, nothing re-read) and the stage's SE summary as profile."""
    from sent.data_contract import stage_files
    from sent.lineage import digest_of

    curriculum_dir = Path(curriculum_dir)
    files = stage_files(curriculum_dir, stage, manifest)
    prefix = f"stage-{stage}/"
    tracker.log_dataset(
        run_id,
        name=f"curriculum-stage-{stage}",
        digest=digest_of(*(e["sha256"] for e in manifest["files"] if e["path"].startswith(prefix))),
        source=str(curriculum_dir / f"stage-{stage}"),
        context=context,
        schema={"format": "parquet", "files": [f.name for f in files]},
        profile=manifest["curriculum"]["stages"][stage - 1],
        tags={"stage": str(stage)},
    )


@contextmanager
def child_run(ctx: RunContext, step: str, params: dict[str, Any] | None = None):
    """A nested MLflow run for one step of the pipeline run ``ctx``; FAILED (with the error as a
    tag) when the step raises. Yields ``(tracker, run_id)``."""
    from prefect.runtime import task_run

    from sent.tracking import Tracker

    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    tags = {"sent.step": step, "sent.run_dir": ctx.run_dir}
    if ctx.flow_run_id:
        tags["sent.prefect_flow_run_id"] = ctx.flow_run_id
    if task_run.id:
        tags["sent.prefect_task_run_id"] = str(task_run.id)
    run_id = tracker.start_run(step, parent_id=ctx.mlflow_run_id, tags=tags, params=params)
    try:
        yield tracker, run_id
    except BaseException as exc:
        tracker.set_tags(run_id, {"sent.error": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker.end_run(run_id, failed=True, killed=isinstance(exc, Interrupted | KeyboardInterrupt))
        raise
    tracker.end_run(run_id)
