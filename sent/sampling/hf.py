"""The ``hf`` sampler: a Hugging Face causal LM in this process, batched, CPU or GPU.

Each batch of prompts is sampled by `sent.sampling.decode` (one prefill per prompt, a
preallocated KV cache; ``decoder="loop"``, the default) or by Hugging Face's ``generate``
(``decoder="generate"``, and for models the loop does not cover). Both sample the same
distribution (temperature, then the top-p nucleus, no top-k: ``generate`` gets a fresh
`GenerationConfig` with ``top_k=0``, so a model's own generation defaults never change it), and
both stop at the tokenizer's EOS and the generation config's EOS ids (`stop_token_ids`).
Randomness comes from a generator seeded per batch (the job's seed and the batch's index, counted
from ``start``), so sampling leaves the caller's RNG state alone (the training engine checkpoints
it), and a job cut into pieces on batch boundaries samples as it would whole.

Log-probabilities are the raw model distribution's (before temperature and top-p), read from the
sampler's own forward passes at no extra cost: the loop takes them from the logits it samples
from; for ``generate`` a logits processor placed before temperature and top-p (Hugging Face runs
caller processors before its warpers) keeps one step's log-softmax and reads off the token
sampled from it at the next step. They agree with a full forward pass over the finished
sequences (`sent.models.token_logprobs`) to float rounding: the KV-cached decode adds in another
order (tests/sampling/test_sampling.py states the tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sent.chat import render_prompts
from sent.models import load_model, load_tokenizer
from sent.sampling.base import Completion, Messages, Settings, derived_seed
from sent.sampling.decode import Decoded, decode, supports_decode_loop

DECODERS = ("loop", "generate")
"""loop: `sent.sampling.decode` (one prefill per prompt, a preallocated cache); generate:
Hugging Face's ``generate``. The same distribution; the loop is the faster."""


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens a response stops at: the tokenizer's EOS and the model's generation config's
    (an instruct model's end-of-turn token is often only in the latter)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    ids.update(extra if isinstance(extra, list | tuple) else [extra] if extra is not None else [])
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config names an EOS token")
    return sorted(ids)


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
        decoder: str = "loop",
    ) -> None:
        if model is None:
            if model_path is None:
                raise ValueError("HFSampler needs a model or a model_path")
            model = load_model(model_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        if tokenizer is None:
            source = tokenizer_path or model_path
            if source is None:
                raise ValueError("HFSampler needs a tokenizer, a tokenizer_path or a model_path")
            tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        self.model, self.tokenizer = model, tokenizer
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
        self.batch_size, self.progress, self.decoder = batch_size, progress, decoder

    def prompt_texts(self, prompts: Sequence[Messages]) -> list[str]:
        return render_prompts(self.tokenizer, prompts)

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Messages], settings: Settings, *, seed: int, start: int = 0
    ) -> list[list[Completion]]:
        if start % self.batch_size:
            raise ValueError(
                f"start={start} is not a multiple of the batch size {self.batch_size}: the hf sampler seeds "
                "whole batches, so a piece of a job must begin on one"
            )
        first_batch = start // self.batch_size
        n = settings.n

        tok, model = self.tokenizer, self.model
        eos_ids = stop_token_ids(model, tok)
        texts = self.prompt_texts(prompts)
        prompt_ids = tok(texts, add_special_tokens=False)["input_ids"]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        results: list[list[Completion]] = []
        batches = range(0, len(texts), self.batch_size)
        loop = self.decoder == "loop" and supports_decode_loop(model)
        for b, lo in enumerate(tqdm(batches, desc="sampling", unit="batch", disable=not self.progress)):
            batch_ids = prompt_ids[lo : lo + self.batch_size]
            batch_seed = derived_seed(seed, first_batch + b)
            if loop:
                generator = torch.Generator(device=device).manual_seed(batch_seed)
                decoded = decode(
                    model,
                    batch_ids,
                    n=n,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    max_new_tokens=settings.max_new_tokens,
                    eos_ids=eos_ids,
                    pad_id=tok.pad_token_id,
                    generator=generator,
                    logprobs=settings.logprobs,
                )
            else:
                decoded = self._generate(batch_ids, batch_seed, eos_ids, settings)
            for row, ids in enumerate(decoded.tokens):
                stopped = bool(ids) and ids[-1] in eos_ids
                text = tok.decode(ids[:-1] if stopped else ids, skip_special_tokens=True)
                token_lp = tuple(decoded.logprobs[row]) if decoded.logprobs is not None else None
                if row % n == 0:
                    results.append([])
                results[-1].append(
                    Completion(
                        text,
                        tuple(ids),
                        math.fsum(token_lp) if token_lp is not None else float("nan"),
                        "stop" if stopped else "length",
                        token_logprobs=token_lp,
                        prompt_token_ids=tuple(batch_ids[row // n]),
                    )
                )
        model.train(was_training)
        return results

    def _generate(
        self,
        batch_ids: list[list[int]],
        seed: int,
        eos_ids: list[int],
        settings: Settings,
    ) -> Decoded:
        """One batch through Hugging Face's ``generate`` (models `decode` does not cover)."""
        from transformers import GenerationConfig, LogitsProcessorList

        n, temperature, top_p = settings.n, settings.temperature, settings.top_p
        max_new_tokens, logprobs = settings.max_new_tokens, settings.logprobs
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        gen_cfg = GenerationConfig(
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            top_k=0 if temperature > 0 else None,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n if temperature > 0 else 1,  # greedy: decode once, replicate
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos_ids,
        )
        enc = tok.pad({"input_ids": batch_ids}, return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items()}
        recorder = _SampledLogprobs() if logprobs else None
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            seqs = model.generate(
                **enc,
                generation_config=gen_cfg,
                logits_processor=LogitsProcessorList([recorder]) if recorder else None,
            )
        gen = seqs[:, enc["input_ids"].shape[1] :]
        token_lps = recorder.finish(gen) if recorder else None
        if temperature <= 0:
            gen = gen.repeat_interleave(n, dim=0)
            token_lps = token_lps.repeat_interleave(n, dim=0) if token_lps is not None else None
        # valid generated tokens: up to and including the first stop token (padding only follows it)
        is_eos = torch.isin(gen, torch.tensor(eos_ids, device=gen.device)).long()
        lengths = ((is_eos.cumsum(-1) - is_eos) == 0).sum(-1).tolist()
        tokens = [row[:length] for row, length in zip(gen.tolist(), lengths, strict=True)]
        lps = (
            [row[:length] for row, length in zip(token_lps.tolist(), lengths, strict=True)]
            if token_lps is not None
            else None
        )
        return Decoded(tokens, lps)
