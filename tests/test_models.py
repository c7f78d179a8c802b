"""`sent.models`: log-probabilities of responses, with and without one prompt forward per group."""

from __future__ import annotations

import pytest
import torch

from sent.models import load_model, response_logits_and_logprobs, token_logprobs


@pytest.fixture(scope="module")
def model(tiny_toy):
    return load_model(tiny_toy.model_dir, device="cpu", dtype="float32")


def _grouped_batch(prompts: int, group: int, width: int, response: int, seed: int = 0):
    """``prompts`` random prompts of random lengths, each with ``group`` random responses of random
    lengths: [left-padded prompt | right-padded response], rows of a group consecutive."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros((prompts * group, width + response), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for p in range(prompts):
        length = int(torch.randint(width // 2, width + 1, (1,), generator=g))
        prompt = torch.randint(5, 300, (length,), generator=g)
        for k in range(group):
            row, r = p * group + k, int(torch.randint(1, response + 1, (1,), generator=g))
            ids[row, width - length : width], mask[row, width - length : width] = prompt, 1
            ids[row, width : width + r] = torch.randint(5, 300, (r,), generator=g)
            mask[row, width : width + r] = 1
    return ids, mask, torch.arange(prompts).repeat_interleave(group)


def test_one_prompt_forward_per_group_gives_the_plain_forwards_values_and_gradients(model):
    ids, mask, groups = _grouped_batch(prompts=5, group=4, width=20, response=12)
    valid = mask[:, 20:].bool()
    model.train()
    logits, logp = response_logits_and_logprobs(model, ids, mask, 20)
    shared_logits, shared_logp = response_logits_and_logprobs(model, ids, mask, 20, groups)
    assert shared_logits.shape == logits.shape and shared_logp.shape == logp.shape
    torch.testing.assert_close(shared_logp[valid], logp[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared_logits[valid], logits[valid], rtol=1e-5, atol=1e-5)
    params = list(model.parameters())
    plain = torch.autograd.grad((logp * valid).sum(), params)
    shared = torch.autograd.grad((shared_logp * valid).sum(), params)
    for a, b in zip(plain, shared, strict=True):  # the G rows' gradients add up in their prompt's
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    model.eval()


def test_groups_may_be_in_any_order_and_of_one_row(model):
    # rows shuffled (a group's rows apart), one group of a single row, a one-token response
    ids, mask, groups = _grouped_batch(prompts=3, group=3, width=16, response=1)
    order = torch.tensor([4, 0, 8, 2, 6, 1, 7, 3, 5])
    ids, mask, groups = ids[order], mask[order], groups[order]
    ids, mask, groups = ids[:7], mask[:7], groups[:7]  # the last group keeps one of its rows
    plain = token_logprobs(model, ids, mask, 16)
    shared = token_logprobs(model, ids, mask, 16, groups=groups, chunk_rows=4)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
