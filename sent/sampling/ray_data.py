"""Sampling on Ray Data (``sampling.executor: ray``): curation's chunks and evaluation's benchmarks.

A sampling job (a curation's missing chunks, an evaluation's benchmarks) is cut into *pieces*:
prompts sampled with one seed from one start position (`Piece`). A piece comes out the same whichever
worker samples it, because the samplers seed by the job's seed and the prompt's position, never by
worker (`sent.sampling.base.Sampler.generate`'s ``start``): a curation chunk is a piece seeded by
the run's seed and the chunk's index (`sent.sampling.chunk.chunk_seed`, as the local loop does); an
evaluation cuts each benchmark at the ``hf`` sampler's batches, so it equals the local evaluation.

`stream` runs the pieces as one Ray Dataset and yields each piece's completions as soon as they
are all in:

- ``hf``: ``map_batches`` over an actor pool of our ``hf`` sampler (``ray.replicas`` actors, each
  loading the model once, holding ``ray.cpus_per_actor`` CPUs and ``ray.gpus_per_replica`` GPUs);
  one row per piece;
- ``vllm``: ``ray.data.llm``'s vLLM engine processor, one request per response
  (`sent.sampling.ray_llm`), regrouped into pieces here.

Curation grades and clusters each chunk in a Ray task (``ray.cpus_per_grader`` CPUs, the same
`sent.sampling.chunk.grade_chunk` as the local loop) while sampling goes on, and the driver writes each
chunk as its grades come back (`on_chunk`), so an interrupted curation resumes with the chunks it
lacks, whichever executor ran the rest. Evaluation collects every benchmark's completions and
scores them here.

On the ``hf`` sampler a chunk equals the local loop's exactly when the actor runs torch with the
same number of threads (``ray.cpus_per_actor`` = this process's). Another thread count rounds the
model's arithmetic differently: log-probabilities then agree to about 1e-7 relatively, and a
sampled token could in principle flip where a draw falls that close to a boundary (it never did in
the tests here).

``ray.address`` names a running cluster; without one a local Ray is started for the job and
stopped after it, with one logical CPU more than the sampler actors hold, so that grading always
has a slot.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sent import interrupt
from sent.ray_address import check_ray_address
from sent.sampling.base import Completion, Messages, Settings
from sent.sampling.pieces import Piece, RayExecutorError, decode_completions, encode_completions

if TYPE_CHECKING:
    from sent.config import ModelConfig, SentConfig
    from sent.problems import Problem

logger = logging.getLogger(__name__)

VERIFIER_START_S = 120.0
"""How long a grading worker waits for its math-verify workers to start (sympy's import), once."""

INSTALL = "Ray Data is not installed: pip install -e '.[ray]' (ray[data]; the gpu and dev extras have it)"


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayExecutorError(f"{INSTALL} ({exc})") from None
    return ray


class PieceSampler:
    """A sampler actor of the ``hf`` pipeline: the model loaded once, then whole pieces sampled."""

    def __init__(self, cfg: SentConfig, model: ModelConfig, settings: Settings) -> None:
        import torch

        from sent.sampling.configured import build_sampler

        torch.set_num_threads(max(1, int(cfg.ray.cpus_per_actor)))  # the CPUs it holds
        self.settings = settings
        self.sampler = build_sampler(cfg, model, backend="hf", progress=False)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"key": [], "completions": []}
        for key, text in zip(batch["key"], batch["piece"], strict=True):
            piece = json.loads(text)
            groups = self.sampler.generate(piece["prompts"], self.settings, seed=piece["seed"], start=piece["start"])
            out["key"].append(str(key))
            out["completions"].append(encode_completions(groups))
        return out


def stream(
    cfg: SentConfig, model: ModelConfig, backend: str, pieces: Sequence[Piece], settings: Settings
) -> Iterator[tuple[str, list[list[Completion]]]]:
    """(key, completions) of each piece, in the order they finish, from one Ray Dataset. Ray must be
    connected (`session`)."""
    if backend == "vllm":
        from sent.sampling.ray_llm import stream_vllm

        yield from stream_vllm(cfg, model, pieces, settings)
        return
    ray = _ray()
    rc = cfg.ray
    items = [{"key": p.key, "piece": json.dumps(asdict(p))} for p in pieces]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        PieceSampler,
        fn_constructor_kwargs={"cfg": cfg, "model": model, "settings": settings},
        batch_size=1,
        concurrency=rc.replicas,
        num_cpus=rc.cpus_per_actor,
        num_gpus=rc.gpus_per_replica,
    )
    for row in ds.iter_rows():
        yield str(row["key"]), decode_completions(row["completions"])


# --------------------------------------------------------------------------------------------
# curation: sampled chunks graded in Ray tasks, written by the driver
# --------------------------------------------------------------------------------------------


def grade_piece(cfg: SentConfig, problems: list[Problem], completions: list[list[Completion]]) -> pa.Table:
    """A grading task: a chunk's completions graded and clustered into its samples table."""
    from sent.rewards import warm_up_verifier
    from sent.sampling.chunk import grade_chunk
    from sent.semantic import configured_judge

    if cfg.semantic.judge == "math":  # a fresh worker process: no check pays the verifiers' start-up
        warm_up_verifier(wait_s=VERIFIER_START_S, workers=cfg.semantic.verify_workers)
    return grade_chunk(cfg, problems, completions, configured_judge(cfg.semantic))


def sample_chunks(
    cfg: SentConfig,
    chunks: Mapping[int, Sequence[Problem]],
    on_chunk: Callable[[int, pa.Table], None],
) -> float:
    """Sample, grade and cluster ``chunks`` ({index: problems}) on Ray; ``on_chunk(index, table)``
    is called in this process as each one completes, in any order. Returns the seconds spent."""
    from sent.sampling.chunk import chunk_seed, curation_settings

    if not chunks:
        return 0.0
    sampling = cfg.sampling
    check_backend(sampling.backend)
    t0 = time.perf_counter()
    model = cfg.semantic.scoring_model or cfg.model
    pieces = [
        Piece(str(ci), [cfg.prompt.messages(p.problem) for p in problems], chunk_seed(cfg, ci))
        for ci, problems in chunks.items()
    ]
    settings = curation_settings(cfg)
    with session(cfg, sampling.backend) as ray:
        grade = ray.remote(num_cpus=cfg.ray.cpus_per_grader)(grade_piece)
        sampled = _Background(stream(cfg, model, sampling.backend, pieces, settings))
        grading: dict[Any, int] = {}
        while sampled.alive() or grading:
            for key, completions in sampled.ready():
                ci = int(key)
                logger.debug("chunk %d sampled after %.1f s", ci, time.perf_counter() - t0)
                grading[grade.remote(cfg, list(chunks[ci]), completions)] = ci
            if grading:
                done, _ = ray.wait(list(grading), num_returns=1, timeout=0.2)
                for ref in done:
                    on_chunk(grading.pop(ref), ray.get(ref))
            else:
                sampled.wait(0.2)
        sampled.raise_error()
    return time.perf_counter() - t0


class _Background:
    """An iterator drained by a thread: the driver can write graded chunks while it waits for the
    next sampled one."""

    def __init__(self, items: Iterator[Any]) -> None:
        self.items: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, args=(items,), daemon=True, name="ray-data-stream")
        self.thread.start()

    def _drain(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                self.items.put(item)
        except BaseException as exc:  # re-raised in the driver (raise_error)
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive() or not self.items.empty()

    def ready(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.items.get_nowait())
            except queue.Empty:
                return out

    def wait(self, seconds: float) -> None:
        self.thread.join(seconds)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------------------------
# evaluation: every benchmark in one dataset
# --------------------------------------------------------------------------------------------


def sample_benchmarks(
    cfg: SentConfig,
    model: ModelConfig,
    backend: str,
    prompts: dict[str, list[Messages]],
    settings: Settings,
    seed: int,
) -> dict[str, list[list[Completion]]]:
    """Each benchmark's completions (``prompts``: {benchmark: its prompts}), every benchmark in one
    Ray Dataset. A benchmark is one job seeded ``seed``, as in the local evaluation; the ``hf``
    sampler's pieces are its batches (``sampling.batch_size``), so the results equal the local
    ones; ``vllm`` requests are seeded per response, so a benchmark is one piece."""
    check_backend(backend)
    step = cfg.sampling.batch_size if backend == "hf" else None
    keys: dict[str, list[str]] = {}
    pieces = []
    for name, job in prompts.items():
        size = step or max(1, len(job))
        mine = [Piece(f"{name}\t{lo}", job[lo : lo + size], seed, lo) for lo in range(0, len(job), size)]
        keys[name] = [p.key for p in mine]
        pieces += mine
    found: dict[str, list[list[Completion]]] = {}
    with session(cfg, backend):
        for key, completions in stream(cfg, model, backend, pieces, settings):
            found[key] = completions
            interrupt.check(f"evaluating on Ray ({len(found)} of {len(pieces)} pieces sampled; nothing is kept)")
    return {name: [c for key in keys[name] for c in found[key]] for name in prompts}


# --------------------------------------------------------------------------------------------
# Ray itself
# --------------------------------------------------------------------------------------------


def check_backend(backend: str) -> None:
    """Refuse, before Ray starts, a backend the pipeline cannot run here."""
    _ray()
    if backend == "vllm":
        from sent.sampling.ray_llm import check_installed

        check_installed()


@contextmanager
def session(cfg: SentConfig, backend: str) -> Iterator[Any]:
    """Ray, connected for a job on ``backend``: ``ray.address``'s cluster, or a local Ray stopped afterwards."""
    ray = _ray()
    started = _connect(ray, cfg, backend)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _connect(ray, cfg: SentConfig, backend: str) -> bool:
    """Join ``ray.address``'s cluster, or start a local Ray sized for the pipeline. True when this
    call started Ray (and so stops it)."""
    if ray.is_initialized():
        return False
    rc = cfg.ray
    options: dict[str, Any] = {"runtime_env": rc.runtime_env, "include_dashboard": False, "log_to_driver": True}
    if rc.address is None:
        # one logical CPU more than the samplers hold: the grading tasks always get a slot
        options["num_cpus"] = max(os.cpu_count() or 1, int(rc.replicas * rc.cpus_per_actor + rc.cpus_per_grader))
        options["num_gpus"] = math.ceil(replica_gpus(cfg, backend) * rc.replicas) or None  # none: Ray detects them
    else:
        check_ray_address(rc.address, "ray.address")  # ray.init would retry a dead address forever
        options["address"] = rc.address
    logger.info("Ray: %s", rc.address or f"a local Ray ({options['num_cpus']} logical CPUs)")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    ray.init(**{k: v for k, v in options.items() if v is not None})
    _restore(handlers)
    return True


def replica_gpus(cfg: SentConfig, backend: str) -> float:
    """GPUs one sampler replica holds: a vLLM engine's tensor-parallel size, else ``ray.gpus_per_replica``."""
    if backend == "vllm":
        return float(cfg.sampling.tensor_parallel_size)
    return cfg.ray.gpus_per_replica


def _restore(handlers: dict) -> None:
    """Put back the signal handlers ``ray.init`` replaced (it installs its own SIGTERM handler in the
    driver): a SIGTERM must still reach `sent.interrupt`, which stops at the next chunk."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread can set handlers, and ray.init sets none elsewhere
    for sig, handler in handlers.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
