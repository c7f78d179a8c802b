"""The ``hf`` sampler: Hugging Face ``generate``, batched with left padding, CPU or GPU.

Settings are passed as a fresh `GenerationConfig` (``top_k=0``), so the model's own generation
defaults (often ``top_k=50``) never change the sampling distribution. Randomness comes from a
forked RNG seeded per batch (the job's seed and the batch's index, counted from ``start``), so
sampling leaves the caller's RNG state alone (the training engine checkpoints it), and a job cut
into pieces on batch boundaries samples as it would whole.

Log-probabilities come from generate's own forward passes: a logits processor placed before
temperature and top-p (Hugging Face runs caller processors before its warpers) keeps one step's
log-softmax of the raw logits and reads off the token sampled from it at the next step. So they
are the raw model distribution's, for any temperature or top-p, cost no extra forward pass, and
hold one ``(rows, vocab)`` tensor at a time where keeping generate's per-step logits would hold
all of them. They agree with a full forward pass over the finished sequences
(`sent.models.token_logprobs`) to float rounding: the KV-cached decode adds in another order
(tests/sampling/test_sampling.py states the tolerance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sent.models import load_model, load_tokenizer
from sent.sampling.base import Completion, Messages, register_sampler


class _SampledLogprobs:
    """A logits processor that records the raw log-probability of each sampled token.

    Called once per decoding step with the tokens so far and that step's scores: it reads the
    previous step's log-softmax at the token just appended, and keeps this step's for the next.
    `finish` reads the last step's at the final tokens. Scores pass through unchanged.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.columns: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.columns.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """``(rows, generated columns)`` log-probabilities of ``generated``."""
        if self.previous is None:
            return torch.zeros(generated.shape, dtype=torch.float32, device=generated.device)
        self.columns.append(self.previous.gather(-1, generated[:, -1:]).squeeze(-1))
        out = torch.stack(self.columns, dim=1)
        if out.shape != generated.shape:
            raise RuntimeError(f"recorded {tuple(out.shape)} log-probabilities for {tuple(generated.shape)} tokens")
        return out


class HFSampler:
    def __init__(
        self,
        model=None,
        tokenizer=None,
        *,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        if model is None:
            if model_path is None:
                raise ValueError("HFSampler needs a model or a model_path")
            model = load_model(model_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        if tokenizer is None:
            tokenizer = load_tokenizer(tokenizer_path or model_path, trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress

    def prompt_texts(self, prompts: Sequence[Messages]) -> list[str]:
        return [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]

    @torch.no_grad()
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
        start: int = 0,
    ) -> list[list[Completion]]:
        from transformers import GenerationConfig, LogitsProcessorList

        if start % self.batch_size:
            raise ValueError(
                f"start={start} is not a multiple of the batch size {self.batch_size}: the hf sampler seeds "
                "whole batches, so a piece of a job must begin on one"
            )
        first_batch = start // self.batch_size

        tok, model = self.tokenizer, self.model
        eos = tok.eos_token_id
        gen_cfg = GenerationConfig(
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            top_k=0 if temperature > 0 else None,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n if temperature > 0 else 1,  # greedy: decode once, replicate
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        texts = self.prompt_texts(prompts)
        prompt_ids = tok(texts, add_special_tokens=False)["input_ids"]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results: list[list[Completion]] = []
        batches = range(0, len(texts), self.batch_size)
        for b, lo in enumerate(tqdm(batches, desc="sampling", unit="batch", disable=not self.progress)):
            batch_ids = prompt_ids[lo : lo + self.batch_size]
            enc = tok.pad({"input_ids": batch_ids}, return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            recorder = _SampledLogprobs() if logprobs else None
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + first_batch + b)
                seqs = model.generate(
                    **enc,
                    generation_config=gen_cfg,
                    logits_processor=LogitsProcessorList([recorder]) if recorder else None,
                )
            prompt_len = enc["input_ids"].shape[1]
            gen = seqs[:, prompt_len:]
            token_lps = recorder.finish(gen) if recorder else None
            if temperature <= 0:
                gen = gen.repeat_interleave(n, dim=0)
                token_lps = token_lps.repeat_interleave(n, dim=0) if recorder else None
            # valid generated tokens: up to and including the first EOS (padding only follows it)
            is_eos = (gen == eos).long()
            gen_mask = (is_eos.cumsum(-1) - is_eos) == 0
            gen_list, mask_list = gen.tolist(), gen_mask.tolist()
            lps_list = (token_lps * gen_mask).tolist() if recorder else None
            for row in range(gen.shape[0]):
                length = sum(mask_list[row])
                ids = gen_list[row][:length]
                stopped = bool(ids) and ids[-1] == eos
                text = tok.decode(ids[:-1] if stopped else ids, skip_special_tokens=True)
                token_lp = tuple(lps_list[row][:length]) if lps_list else None
                if row % n == 0:
                    results.append([])
                results[-1].append(
                    Completion(
                        text,
                        tuple(ids),
                        float(sum(token_lp)) if token_lp is not None else float("nan"),
                        "stop" if stopped else "length",
                        token_logprobs=token_lp,
                        prompt_token_ids=tuple(batch_ids[row // n]),
                    )
                )
        model.train(was_training)
        return results


@register_sampler("hf")
def _make_hf(**options) -> HFSampler:
    return HFSampler(**options)
