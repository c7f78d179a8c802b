"""The sampler a config asks for: the registry of backends by name (``hf``, ``vllm``) and the one
place that maps config sections to their arguments. Each backend is imported when it is made, so
choosing ``hf`` never imports vLLM; the backends import only `sent.sampling.base`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sent.sampling.base import Sampler

if TYPE_CHECKING:
    from sent.config import ModelConfig, SentConfig


def _hf(**options) -> Sampler:
    from sent.sampling.hf import HFSampler

    return HFSampler(**options)


def _vllm(**options) -> Sampler:
    from sent.sampling.vllm import VLLMSampler

    return VLLMSampler(**options)


SAMPLERS: dict[str, Callable[..., Sampler]] = {"hf": _hf, "vllm": _vllm}
"""The samplers by the name ``sampling.backend`` (and ``evaluation.backend``) gives; each factory
imports its backend when it is called."""


def make_sampler(name: str, **options) -> Sampler:
    """A sampler of backend ``name`` with its own options (`HFSampler`, `VLLMSampler`)."""
    try:
        factory = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; registered: {sorted(SAMPLERS)}") from None
    return factory(**options)


def build_sampler(cfg: SentConfig, model: ModelConfig, *, backend: str | None = None, progress: bool = True) -> Sampler:
    """The configured sampler for ``model`` (the policy, or ``semantic.scoring_model``);
    ``backend`` overrides ``sampling.backend`` (the evaluation has its own)."""
    sampling = cfg.sampling
    if (backend or sampling.backend) == "hf":
        return make_sampler(
            "hf",
            model_path=model.path,
            tokenizer_path=model.tokenizer,
            device=model.device,
            dtype=model.dtype,
            trust_remote_code=model.trust_remote_code,
            batch_size=sampling.batch_size,
            progress=progress,
        )
    return make_sampler(
        "vllm",
        model_path=model.path,
        tokenizer_path=model.tokenizer,
        dtype=model.dtype,
        trust_remote_code=model.trust_remote_code,
        tensor_parallel_size=sampling.tensor_parallel_size,
        gpu_memory_utilization=sampling.gpu_memory_utilization,
        max_model_len=max_model_len(cfg),
        seed=cfg.seed,
        cpu_kv_cache_gib=sampling.cpu_kv_cache_gib,
        progress=progress,
    )


def max_model_len(cfg: SentConfig) -> int:
    """vLLM's context length: ``sampling.max_model_len``, else the prompt and response budgets."""
    return cfg.sampling.max_model_len or cfg.data.max_prompt_tokens + cfg.sampling.max_new_tokens
