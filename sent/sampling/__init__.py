"""Samplers: N completions per chat prompt, by backend name (``hf``, ``vllm``)."""

from sent.sampling.base import Completion, Sampler
from sent.sampling.configured import SAMPLERS, make_sampler

__all__ = ["SAMPLERS", "Completion", "Sampler", "make_sampler"]
