"""The ``hf`` sampler: Hugging Face ``generate``, batched with left padding, CPU or GPU.

Settings are passed as a fresh `GenerationConfig` (``top_k=0``), so the model's own generation
defaults (often ``top_k=50``) never change the sampling distribution. Randomness comes from a
forked RNG seeded per batch, so sampling leaves the caller's RNG state alone (the training
engine checkpoints it). Sequence log-probabilities come from one forward pass over the finished
sequences (`sent.models.token_logprobs`), which bounds memory where keeping generate's
per-step logits would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sent.models import load_model, load_tokenizer, token_logprobs
from sent.sampling.base import Completion, Messages, register_sampler


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
    ) -> list[list[Completion]]:
        from transformers import GenerationConfig

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
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results: list[list[Completion]] = []
        batches = range(0, len(texts), self.batch_size)
        for b, start in enumerate(tqdm(batches, desc="sampling", unit="batch", disable=not self.progress)):
            enc = tok(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + b)
                seqs = model.generate(**enc, generation_config=gen_cfg)
            if temperature <= 0:
                seqs = seqs.repeat_interleave(n, dim=0)
            prompt_len = enc["input_ids"].shape[1]
            gen = seqs[:, prompt_len:]
            # valid generated tokens: up to and including the first EOS (padding only follows it)
            is_eos = (gen == eos).long()
            gen_mask = (is_eos.cumsum(-1) - is_eos) == 0
            full_mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), gen_mask.long()], dim=1)
            lps = (token_logprobs(model, seqs, full_mask, prompt_len) * gen_mask).sum(-1).tolist()
            for row in range(gen.shape[0]):
                ids = gen[row][gen_mask[row]].tolist()
                stopped = bool(ids) and ids[-1] == eos
                text = tok.decode(ids[:-1] if stopped else ids, skip_special_tokens=True)
                if row % n == 0:
                    results.append([])
                results[-1].append(Completion(text, tuple(ids), float(lps[row]), "stop" if stopped else "length"))
        model.train(was_training)
        return results


@register_sampler("hf")
def _make_hf(**options) -> HFSampler:
    return HFSampler(**options)
