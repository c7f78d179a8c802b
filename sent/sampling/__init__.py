"""Samplers: N completions per chat prompt, registered by name (``hf``, ``vllm``)."""

from sent.sampling.base import SAMPLERS, Completion, Sampler, make_sampler, register_sampler

__all__ = ["SAMPLERS", "Completion", "Sampler", "make_sampler", "register_sampler"]
