"""Batched sampling with a KV cache of our own: one prefill per prompt, its cache copied to the
n samples, finished rows dropped from the batch.

Why not Hugging Face's ``generate``: it runs the prompt through the model once per sample (its
inputs are expanded before the prefill), its cache grows by concatenation (a copy of every key
and value at every token, measured at half the decode time of the toy model), it keeps finished
rows in the batch to the end, and multinomial sampling draws a full row of exponentials per
token. Here the prompt is prefilled once, the cache is preallocated for the whole response
budget and written in place, a batch is compacted when a quarter of its rows have finished, and
a token is drawn by inverse transform from one uniform number per row.

The distribution is ``generate``'s (tests/sampling/test_decode.py checks token frequencies
against it): the raw logits, divided by the temperature, restricted to the top-p nucleus as
`transformers`' ``TopPLogitsWarper`` restricts it (the smallest set of most probable tokens whose
mass reaches ``top_p``, at least one), softmax, one draw. Each row takes one uniform number a
step from the batch's generator, drawn for every row of the batch whether it still runs or not,
so dropping finished rows changes no other row's draws. Greedy decoding takes the arg-max. The
log-probability recorded for each token is the raw model distribution's (before temperature and
top-p), the quantity a trainer recomputes. Rows stop at any of ``eos_ids``.

Models whose every layer is full attention (``config.layer_types``, as Qwen2, Llama and most
decoders) use this loop; others (sliding-window or linear-attention layers) keep ``generate``
(`supports_decode_loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from sent.models import position_ids_for

COMPACT_BELOW = 0.75
"""Drop finished rows from the batch once fewer than this share of its rows are still running
(dropping copies the cache, so not at every finished row)."""


class _PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer sized for the whole sequence, written in place.

    Attention reads the filled prefix (a view), so a token costs no copy of the cache. The
    prefill of a batch of prompts is written ``copies`` times (row ``p * copies + k``), so the
    samples of a prompt share its one prefill."""

    def __init__(self, capacity: int, copies: int = 1) -> None:
        super().__init__()
        self.capacity, self.copies = capacity, copies
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads, _, dim = key_states.shape
            shape = (batch, self.copies, heads, self.capacity, dim)
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            keys[:, :, :, :end] = key_states[:, None]
            values[:, :, :, :end] = value_states[:, None]
            self.keys, self.values = keys.flatten(0, 1), values.flatten(0, 1)
            self.is_initialized, self.length = True, end
            # the prefill attends within its prompts: the un-copied states are the ones it needs
            return key_states, value_states
        if end > self.capacity:
            raise RuntimeError(f"KV cache of {self.capacity} positions is full ({end} needed)")
        cached_k, cached_v = self.keys, self.values
        assert cached_k is not None and cached_v is not None  # set by the prefill above
        cached_k[:, :, self.length : end] = key_states
        cached_v[:, :, self.length : end] = value_states
        self.length = end
        return cached_k[:, :, :end], cached_v[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``, copying only the filled positions."""
        if not self.is_initialized:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((len(indices), *old.shape[1:]))
            new[:, :, : self.length] = old[indices, :, : self.length]
            setattr(self, name, new)


def _cache_for(model, capacity: int, copies: int) -> Cache:
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[_PreallocatedLayer(capacity, copies) for _ in range(layers)])


def supports_decode_loop(model) -> bool:
    """Whether every layer of ``model`` is plain full attention (what `_PreallocatedLayer` caches)."""
    config = model.config.get_text_config(decoder=True)
    kinds = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in kinds) and not getattr(config, "use_sliding_window", False)


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``(rows, V)``: arg-max at temperature 0, else a draw from
    the softmax of ``logits / temperature`` restricted to the top-p nucleus, by inverse transform
    of ``uniform`` ``(rows,)`` (drawn from ``generator`` when not given)."""
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        # ascending: a token is outside the nucleus when the mass below and at it is <= 1 - top_p
        outside = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p
        outside[:, -1] = False  # the most probable token always stays
        scores = scores.masked_fill(outside.scatter(1, order, outside), float("-inf"))
    cdf = scores.softmax(-1).cumsum(-1)
    if uniform is None:
        uniform = torch.rand(scores.shape[0], generator=generator, device=scores.device)
    picked = torch.searchsorted(cdf, uniform.to(cdf.dtype)[:, None] * cdf[:, -1:], right=True)
    return picked.squeeze(1).clamp(max=scores.shape[1] - 1)


@dataclass(frozen=True)
class Decoded:
    """Sampled responses, row ``p * n + k`` for sample k of prompt p."""

    tokens: list[list[int]]
    """Each row's tokens, the stop token included when it stopped on one."""
    logprobs: list[list[float]] | None
    """Each token's raw log-probability (None when not asked for)."""


@torch.no_grad()
def decode(
    model,
    prompt_ids: Sequence[Sequence[int]],
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None,
    logprobs: bool = True,
) -> Decoded:
    """``n`` responses to each prompt of ``prompt_ids`` (token ids, no padding); see the module
    docstring. Greedy decoding runs each prompt once and repeats the result ``n`` times."""
    device = next(model.parameters()).device
    copies = n if temperature > 0 else 1
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompt_ids):  # left padding: every prompt ends at the last column
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = _cache_for(model, width + max_new_tokens, copies)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_for(mask),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    rows = len(prompt_ids) * copies
    order = torch.arange(len(prompt_ids), device=device).repeat_interleave(copies)
    logits = out.logits[:, -1][order]
    mask, position = mask[order], mask[order].sum(-1)
    eos = torch.tensor(sorted(set(eos_ids)), device=device)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    token_lps = torch.zeros((rows, max_new_tokens), device=device) if logprobs else None
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    live = torch.arange(rows, device=device)  # the original row of each batch row
    running = torch.ones(rows, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        # one number per row of the whole batch, every step: a row's draws do not depend on
        # which other rows are still in the batch
        uniform = torch.rand(rows, generator=generator, device=device)[live] if temperature > 0 else None
        picked = sample_tokens(logits, temperature=temperature, top_p=top_p, uniform=uniform)
        write = live[running]
        tokens[write, t] = picked[running]
        lengths[write] = t + 1
        if token_lps is not None:
            lp = torch.log_softmax(logits.float(), -1).gather(1, picked[:, None]).squeeze(1)
            token_lps[write, t] = lp[running]
        running = running & ~torch.isin(picked, eos)
        n_running = int(running.sum())
        if n_running == 0 or t == max_new_tokens - 1:
            break
        if n_running < COMPACT_BELOW * len(live):
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, mask, position, picked, running = live[keep], mask[keep], position[keep], picked[keep], running[keep]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        out = model(
            input_ids=picked[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits, position = out.logits[:, -1], position + 1
    if copies != n:
        tokens, lengths = tokens.repeat_interleave(n, 0), lengths.repeat_interleave(n, 0)
        token_lps = token_lps.repeat_interleave(n, 0) if token_lps is not None else None
    length_list = lengths.tolist()
    token_rows = [row[:length] for row, length in zip(tokens.tolist(), length_list, strict=True)]
    lp_rows = (
        [row[:length] for row, length in zip(token_lps.tolist(), length_list, strict=True)]
        if token_lps is not None
        else None
    )
    return Decoded(token_rows, lp_rows)
