"""The ``vllm`` sampler: vLLM's offline ``LLM.generate``.

One `SamplingParams` per prompt: ``n``, temperature, top_p, ``max_tokens`` always set (vLLM's
default is 16), ``logprobs=0`` when the caller wants log-probabilities (so ``cumulative_logprob``
is filled) and a per-prompt seed (``seed + prompt index``), so that sample k of different prompts
is not correlated and results do not depend on how vLLM batches requests. Tensor-parallel size from the config.
vLLM needs a GPU (no CPU wheel on PyPI); its module is imported only when this sampler is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sent.sampling.base import Completion, Messages, register_sampler


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
                )
        self.llm, self.params_cls, self.progress = llm, sampling_params_cls, progress

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        logprobs: bool = True,
    ) -> list[list[Completion]]:
        tok = self.llm.get_tokenizer()
        texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
        params = [
            self.params_cls(
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_new_tokens,
                logprobs=0 if logprobs else None,
                seed=seed + i,
            )
            for i in range(len(texts))
        ]
        outputs = self.llm.generate(texts, params, use_tqdm=self.progress)
        results = []
        for out in outputs:
            completions = sorted(out.outputs, key=lambda c: c.index)
            results.append(
                [
                    Completion(
                        text=c.text,
                        token_ids=tuple(c.token_ids),
                        logprob=float(c.cumulative_logprob if c.cumulative_logprob is not None else float("nan")),
                        finish_reason="stop" if c.finish_reason == "stop" else "length",
                        prompt_token_ids=tuple(out.prompt_token_ids) if out.prompt_token_ids is not None else None,
                    )
                    for c in completions
                ]
            )
        return results


@register_sampler("vllm")
def _make_vllm(**options) -> VLLMSampler:
    return VLLMSampler(**options)
