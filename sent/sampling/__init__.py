"""Samplers: N completions per chat prompt, by backend (``hf``, ``vllm``)."""

from sent.sampling.base import Completion, Sampler
from sent.sampling.configured import BACKENDS, make_sampler

__all__ = ["BACKENDS", "Completion", "Sampler", "make_sampler"]
