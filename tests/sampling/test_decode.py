"""The decode loop (`sent.sampling.decode`) samples what Hugging Face's ``generate`` samples.

Seeds are fixed, so every statistical test below has one outcome on a machine: a pass is not luck
drawn anew each run. The thresholds (p > 1e-3) are those of a test that should pass when the
two distributions are equal.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from sent.models import load_model, load_tokenizer, token_logprobs
from sent.sampling.base import Settings
from sent.sampling.decode import sample_tokens, supports_decode_loop
from sent.sampling.hf import HFSampler

PROMPT = [{"role": "user", "content": "Compute 7+8-5."}]


@pytest.fixture(scope="module")
def model_and_tok(tiny_toy):
    return load_model(tiny_toy.model_dir, device="cpu", dtype="float32"), load_tokenizer(tiny_toy.model_dir)


def _samplers(model, tok, batch_size=64):
    return {d: HFSampler(model, tok, batch_size=batch_size, progress=False, decoder=d) for d in ("loop", "generate")}


def test_the_toy_model_is_covered_by_the_loop(model_and_tok):
    assert supports_decode_loop(model_and_tok[0])


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_first_tokens_follow_the_models_distribution(model_and_tok, temperature, top_p):
    """The first sampled token of 3,000 responses, against the exact probabilities of the first
    position (softmax of logits / T, restricted to the top-p nucleus), for both decoders."""
    model, tok = model_and_tok
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0, -1] / temperature
    probs = logits.double().softmax(-1)
    order = probs.argsort(descending=True)
    inside = probs[order].cumsum(0) - probs[order] < top_p  # the nucleus: mass before a token below top_p
    nucleus = torch.zeros_like(probs, dtype=torch.bool)
    nucleus[order[inside]] = True
    expected = torch.where(nucleus, probs, 0.0)
    expected = expected / expected.sum()
    n = 3000
    for name, sampler in _samplers(model, tok, batch_size=1).items():
        out = sampler.generate([PROMPT], Settings(n=n, temperature=temperature, top_p=top_p, max_new_tokens=1), seed=3)
        counts = Counter(c.token_ids[0] for c in out[0])
        assert set(counts) <= set(nucleus.nonzero().squeeze(-1).tolist()), name  # nothing outside the nucleus
        # categories with an expected count >= 5 (chi-square's rule), the rest pooled
        big = [t for t in range(len(expected)) if expected[t] * n >= 5]
        observed = [counts.get(t, 0) for t in big] + [n - sum(counts.get(t, 0) for t in big)]
        wanted = [float(expected[t]) * n for t in big] + [n - sum(float(expected[t]) * n for t in big)]
        if wanted[-1] < 1e-6:
            observed, wanted = observed[:-1], wanted[:-1]
        wanted = [w * sum(observed) / sum(wanted) for w in wanted]  # equal totals, to float rounding
        assert chisquare(observed, wanted).pvalue > 1e-3, (name, observed, wanted)


def _two_sample_pvalue(a: Counter, b: Counter, min_count: int = 10) -> tuple[float, int]:
    """Chi-square test of two samples' categories (those seen ``min_count`` times in both
    together, the rest pooled); (p-value, number of categories tested)."""
    common = [k for k in set(a) | set(b) if a[k] + b[k] >= min_count]
    table = [[c[k] for k in common] for c in (a, b)]
    rest = [sum(c.values()) - sum(row) for c, row in zip((a, b), table, strict=True)]
    if min(rest) > 0:
        table = [[*row, r] for row, r in zip(table, rest, strict=True)]
    return float(chi2_contingency(table).pvalue), len(common)


def test_whole_responses_come_from_the_same_distribution_as_generates(model_and_tok):
    """4,000 responses of each decoder at T = 1 (two prompts), compared by two-sample chi-square
    tests on what reaches past the first token: the first three tokens and the length (the
    tiny model's responses are too varied to compare whole)."""
    model, tok = model_and_tok
    prompts = [PROMPT, [{"role": "user", "content": "Compute 4-9."}]]
    features = {"first three tokens": lambda c: c.token_ids[:3], "length": lambda c: len(c.token_ids)}
    samples = {}
    for name, sampler in _samplers(model, tok).items():
        out = sampler.generate(prompts, Settings(n=2000, temperature=1.0, top_p=1.0, max_new_tokens=32), seed=11)
        samples[name] = [c for group in out for c in group]
    for feature, of in features.items():
        counts = [Counter(of(c) for c in samples[name]) for name in ("loop", "generate")]
        pvalue, categories = _two_sample_pvalue(*counts)
        assert categories >= 5, feature  # a spread to test, not one answer
        assert pvalue > 1e-3, (feature, pvalue)


def test_recorded_logprobs_equal_a_recomputation(model_and_tok):
    """Each token's raw log-probability as recorded by the loop, against a full forward pass of
    the finished sequence: within 1e-4 (measured: 3.3e-6 on the toy model, fp32)."""
    model, tok = model_and_tok
    sampler = _samplers(model, tok)["loop"]
    out = sampler.generate([PROMPT], Settings(n=64, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=5)
    for c in out[0]:
        ids = torch.tensor([[*c.prompt_token_ids, *c.token_ids]])
        recomputed = token_logprobs(model, ids, torch.ones_like(ids), len(c.prompt_token_ids))[0]
        assert (recomputed - torch.tensor(c.token_logprobs)).abs().max() < 1e-4
        assert c.logprob == pytest.approx(sum(c.token_logprobs))


def test_greedy_decoding_equals_generates(model_and_tok):
    model, tok = model_and_tok
    prompts = [PROMPT, [{"role": "user", "content": "Compute 12-5+6."}], [{"role": "user", "content": "Compute 1+1."}]]
    outs = {
        name: sampler.generate(prompts, Settings(n=2, temperature=0, top_p=1.0, max_new_tokens=24), seed=0)
        for name, sampler in _samplers(model, tok).items()
    }
    assert [[c.token_ids for c in g] for g in outs["loop"]] == [[c.token_ids for c in g] for g in outs["generate"]]


def test_sample_tokens_keeps_the_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1} (0.5 < 0.7, then 0.8 >= 0.7);
    # top_p 0.5 keeps {0} only; top_p 0.01 keeps the most probable token
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    for top_p, allowed in ((0.7, {0, 1}), (0.5, {0}), (0.01, {0}), (1.0, {0, 1, 2, 3})):
        picked = sample_tokens(logits, temperature=1.0, top_p=top_p, generator=g)
        assert set(picked.tolist()) == allowed, top_p
    picked = sample_tokens(logits, temperature=1.0, top_p=0.7, generator=g)
    share = (picked == 0).float().mean().item()
    assert share == pytest.approx(0.5 / 0.8, abs=0.03)  # renormalised within the nucleus
    assert sample_tokens(logits[:2], temperature=0, top_p=1.0, generator=None).tolist() == [0, 0]


def test_finished_rows_leave_the_batch_without_changing_the_others(model_and_tok):
    """Rows are dropped from the cache as they finish (`COMPACT_BELOW`): with compaction off the
    same seed gives the same responses (the draws do not depend on which rows are in the batch,
    only the forward's float rounding could)."""
    import sent.sampling.decode as decode_module

    model, tok = model_and_tok
    sampler = _samplers(model, tok)["loop"]
    prompts = [PROMPT, [{"role": "user", "content": "Compute 98+76."}]]
    a = sampler.generate(prompts, Settings(n=16, temperature=1.0, top_p=1.0, max_new_tokens=32), seed=2)
    try:
        decode_module.COMPACT_BELOW, saved = 0.0, decode_module.COMPACT_BELOW
        b = sampler.generate(prompts, Settings(n=16, temperature=1.0, top_p=1.0, max_new_tokens=32), seed=2)
    finally:
        decode_module.COMPACT_BELOW = saved
    same = sum(x.token_ids == y.token_ids for ga, gb in zip(a, b, strict=True) for x, y in zip(ga, gb, strict=True))
    assert same == 32
