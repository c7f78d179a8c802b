"""The toy world's bootstrap as a pipeline step (configs with a ``toy`` section)."""

from __future__ import annotations

import time

from prefect import task

from sent.lineage import code_version, digest_of
from sent.steps import StepError
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.retries import IO_RETRY_OPTIONS


def _key(inputs: dict) -> str:
    from pathlib import Path

    cfg = inputs["ctx"].load()
    where = [Path(cfg.toy.model_dir).resolve(), Path(cfg.toy.data_dir).resolve()]  # relative paths: per checkout
    return digest_of("bootstrap", cfg.section_digest("toy", "prompt"), *where, code_version())


@task(name="bootstrap", task_run_name="bootstrap", cache_policy=cache_on(_key), persist_result=True, **IO_RETRY_OPTIONS)
def bootstrap_toy(ctx: RunContext) -> Artefact:
    """Generate the toy problems and warm-start the toy model (reused when up to date)."""
    from sent.toy.bootstrap import bootstrap

    cfg = ctx.load()
    t0 = time.perf_counter()
    if cfg.toy is None:
        raise StepError(f"bootstrap needs a toy section in {cfg.source}")
    result = bootstrap(cfg.toy, cfg.prompt)
    compute_s = time.perf_counter() - t0
    return Artefact.of(
        "model",
        "bootstrap",
        result.model_dir,
        meta={
            "n_parameters": result.n_parameters,
            "accuracy_by_level": result.accuracy_by_level,
            "rl_path": str(result.rl_path),
            "test_path": str(result.test_path),
            **produced(ctx, compute_s),
        },
    )


@task(name="base-model", task_run_name="base-model")
def base_model(ctx: RunContext) -> Artefact:
    """The configured starting model (``model.path``) as an artefact: stage 1's start, ``eval:base``."""
    return Artefact.of("model", "base", ctx.load().model.path).verified()
