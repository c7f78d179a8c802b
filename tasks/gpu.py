"""The ``gpu`` slot: a Prefect global concurrency limit whose slots are the GPUs of the work
pool, held by each step for the GPUs it occupies (none for CPU work)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from sent.config import SentConfig
from sent.errors import SentError


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
