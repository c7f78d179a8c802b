"""Exact token entropy of the policy, from logits, in bounded memory.

``H_t = logsumexp(z_t) - sum_v softmax(z_t)_v z_{t,v}``: the same formula as verl's
``entropy_from_logits``, evaluated on row chunks so that the ``(B*T, V)`` softmax of a 150k-token
vocabulary is never materialised at once. Differentiable (the entropy bonus needs its gradient).
Low-precision logits are upcast to float32 per chunk.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ROWS = 1024
"""Rows (token positions) per chunk: 1024 x 152k vocab x 4 bytes is about 0.6 GB of softmax."""


def token_entropy(logits: torch.Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Entropy of the next-token distribution at every position.

    Args:
        logits: ``(B, T, V)`` (or ``(..., V)``) unnormalised logits.
        chunk_rows: positions processed at once; memory is ``O(chunk_rows * V)``.

    Returns:
        ``(B, T)`` (the leading shape of ``logits``) entropies in nats, float32 or wider.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    out_dtype = torch.promote_types(flat.dtype, torch.float32)
    parts = []
    for start in range(0, flat.shape[0], chunk_rows):
        z = flat[start : start + chunk_rows].to(out_dtype)
        p = torch.softmax(z, dim=-1)
        parts.append(torch.logsumexp(z, dim=-1) - (p * z).sum(dim=-1))
    if not parts:
        return flat.new_zeros(lead, dtype=out_dtype)
    return torch.cat(parts).reshape(lead)
