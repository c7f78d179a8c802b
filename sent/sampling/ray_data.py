"""Curation's sampling as a Ray Data pipeline (``sampling.executor: ray``).

The unit of work is the curation's chunk (``sampling.chunk_size`` problems), as in the local
loop: it is the unit of seeding (the run's seed and the chunk's index, `sent.curate.generate_chunk`)
and of resume (one ``samples/part-<chunk>.parquet`` each). The pipeline is a Ray Dataset with one
row per chunk still to sample, and two stages:

- sampling: ``map_batches`` over an actor pool of our ``hf`` sampler (``ray.replicas`` actors, each
  loading the model once, holding ``ray.cpus_per_actor`` CPUs and ``ray.gpus_per_replica`` GPUs);
- grading and clustering: a CPU ``map_batches`` stage (``ray.cpus_per_grader`` a task), the same
  `sent.curate.grade_chunk` as the local loop.

The driver takes each chunk's table as soon as it is done and writes it (`on_chunk`), so an
interrupted curation resumes with the chunks it lacks, whichever executor ran the rest. A chunk
comes out the same whichever actor samples it; it equals the local loop's exactly when the actor
runs torch with the same number of threads (``ray.cpus_per_actor`` = this process's). Another thread
count rounds the model's arithmetic differently: log-probabilities then agree to about 1e-7
relatively, and a sampled token could in principle flip where a draw falls that close to a
boundary (it never did in the tests here).

``ray.address`` names a running cluster; without one a local Ray is started for the curation and
stopped after it, with one logical CPU more than the sampler actors hold, so that the grading stage
always has a slot. vLLM replicas through ``ray.data.llm`` are not built yet: ``executor: ray`` runs
the ``hf`` sampler.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sent.errors import SentError

if TYPE_CHECKING:
    from sent.config import SentConfig
    from sent.curate import Problem

logger = logging.getLogger(__name__)

VERIFIER_START_S = 120.0
"""How long a grading task waits for its math-verify workers to start (sympy's import), once."""

INSTALL = "Ray Data is not installed: pip install -e '.[ray]' (ray[data]; the gpu and dev extras have it)"


class RayExecutorError(SentError, RuntimeError):
    """A Ray Data pipeline that cannot run as configured (Ray missing, an unsupported sampler)."""


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayExecutorError(f"{INSTALL} ({exc})") from None
    return ray


def _encode(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _decode(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(data)).read_all()


def _problems(text: str) -> list[Problem]:
    from sent.curate import Problem

    return [Problem(**p) for p in json.loads(text)]


class ChunkSampler:
    """A sampler actor of the pipeline: the model loaded once, then whole chunks sampled, each with
    its own seed (`sent.curate.generate_chunk`). Completions travel as JSON."""

    def __init__(self, cfg: SentConfig, threads: int) -> None:
        import torch

        from sent.sampling.configured import build_sampler

        torch.set_num_threads(threads)
        self.cfg = cfg
        self.sampler = build_sampler(cfg, cfg.semantic.scoring_model or cfg.model, progress=False)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from sent.curate import generate_chunk

        out: dict[str, list] = {"chunk": [], "problems": [], "completions": []}
        for chunk, problems in zip(batch["chunk"], batch["problems"], strict=True):
            completions = generate_chunk(self.cfg, _problems(problems), self.sampler, int(chunk))
            out["chunk"].append(int(chunk))
            out["problems"].append(problems)
            out["completions"].append(json.dumps([[asdict(c) for c in group] for group in completions]))
        return out


def grade_batch(batch: dict[str, Any], cfg: SentConfig) -> dict[str, list]:
    """The grading stage: each chunk's completions graded and clustered into its samples table."""
    from sent.curate import _judge, grade_chunk
    from sent.rewards import warm_up_verifier
    from sent.sampling.base import Completion

    judge = _judge(cfg)
    if cfg.semantic.judge == "math":  # a fresh worker process: no check pays the verifiers' start-up
        warm_up_verifier(wait_s=VERIFIER_START_S)
    out: dict[str, list] = {"chunk": [], "samples": []}
    for chunk, problems, completions in zip(batch["chunk"], batch["problems"], batch["completions"], strict=True):
        outs = [[Completion(**_tuples(c)) for c in group] for group in json.loads(completions)]
        out["chunk"].append(int(chunk))
        out["samples"].append(_encode(grade_chunk(cfg, _problems(problems), outs, judge)))
    return out


def _tuples(fields: dict[str, Any]) -> dict[str, Any]:
    """A `Completion`'s fields back from JSON (lists to the tuples it holds)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def sample_chunks(
    cfg: SentConfig,
    chunks: dict[int, Sequence[Problem]],
    on_chunk: Callable[[int, pa.Table], None],
) -> float:
    """Sample, grade and cluster ``chunks`` ({index: problems}) on Ray; ``on_chunk(index, table)``
    is called in this process as each one completes, in any order. Returns the seconds spent."""
    if cfg.sampling.backend != "hf":
        raise RayExecutorError(
            f"sampling.executor=ray runs the hf sampler; sampling.backend={cfg.sampling.backend!r} through "
            "ray.data.llm is not built yet (use sampling.executor=local with the vllm backend)"
        )
    if not chunks:
        return 0.0
    ray = _ray()
    t0 = time.perf_counter()
    started = _connect(ray, cfg)
    try:
        items = [
            {"chunk": ci, "problems": json.dumps([asdict(p) for p in problems])} for ci, problems in chunks.items()
        ]
        rc = cfg.ray
        threads = max(1, int(rc.cpus_per_actor))
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            ChunkSampler,
            fn_constructor_kwargs={"cfg": cfg, "threads": threads},
            batch_size=1,
            concurrency=rc.replicas,
            num_cpus=rc.cpus_per_actor,
            num_gpus=rc.gpus_per_replica,
        )
        ds = ds.map_batches(grade_batch, fn_kwargs={"cfg": cfg}, batch_size=1, num_cpus=rc.cpus_per_grader)
        for row in ds.iter_rows():
            on_chunk(int(row["chunk"]), _decode(row["samples"]))
    finally:
        if started:
            ray.shutdown()
    return time.perf_counter() - t0


def _connect(ray, cfg: SentConfig) -> bool:
    """Join ``ray.address``'s cluster, or start a local Ray sized for the pipeline. True when this
    call started Ray (and so stops it)."""
    if ray.is_initialized():
        return False
    rc = cfg.ray
    options: dict[str, Any] = {"runtime_env": rc.runtime_env, "include_dashboard": False, "log_to_driver": True}
    if rc.address is None:
        # one logical CPU more than the samplers hold: the grading stage always gets a slot
        options["num_cpus"] = max(os.cpu_count() or 1, int(rc.replicas * rc.cpus_per_actor + rc.cpus_per_grader))
        options["num_gpus"] = math.ceil(rc.replicas * rc.gpus_per_replica) or None  # none: Ray detects them
    else:
        options["address"] = rc.address
    logger.info("Ray: %s", rc.address or f"a local Ray ({options['num_cpus']} logical CPUs)")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    ray.init(**{k: v for k, v in options.items() if v is not None})
    _restore(handlers)
    return True


def _restore(handlers: dict) -> None:
    """Put back the signal handlers ``ray.init`` replaced (it installs its own SIGTERM handler in the
    driver): a SIGTERM must still reach `sent.interrupt`, which stops at the next chunk."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread can set handlers, and ray.init sets none elsewhere
    for sig, handler in handlers.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
