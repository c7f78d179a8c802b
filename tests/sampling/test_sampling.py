"""Samplers: the real `hf` sampler on the tiny toy model; the `vllm` adapter against a stand-in."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from sent.models import load_model, load_tokenizer, token_logprobs
from sent.sampling import Completion, make_sampler
from sent.sampling.base import Settings, request_seed
from sent.sampling.hf import HFSampler
from sent.sampling.vllm import VLLMSampler

PROMPTS = [[{"role": "user", "content": "Compute 3+4."}], [{"role": "user", "content": "Compute 12-5+6."}]]


@pytest.fixture(scope="module")
def sampler(tiny_toy):
    return make_sampler("hf", model_path=tiny_toy.model_dir, device="cpu", dtype="float32", progress=False)


def test_hf_returns_n_completions_per_prompt(sampler):
    out = sampler.generate(PROMPTS, Settings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=0)
    assert [len(c) for c in out] == [3, 3]
    for completions in out:
        for c in completions:
            assert isinstance(c, Completion) and c.finish_reason in ("stop", "length")
            assert 0 < c.n_tokens <= 24 and c.logprob < 0
            eos = sampler.tokenizer.eos_token_id
            assert (c.token_ids[-1] == eos) == (c.finish_reason == "stop")
            assert eos not in c.token_ids[:-1]


def test_hf_is_deterministic_in_the_seed_and_leaves_the_caller_rng_alone(sampler):
    state = torch.get_rng_state()
    a = sampler.generate(PROMPTS, Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=7)
    assert torch.equal(state, torch.get_rng_state())
    b = sampler.generate(PROMPTS, Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=7)
    c = sampler.generate(PROMPTS, Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=8)
    assert a == b
    assert a != c


def test_hf_logprob_is_the_models_log_likelihood(sampler, tiny_toy):
    # recompute one completion's log-probability token by token with a plain forward pass
    out = sampler.generate(PROMPTS[:1], Settings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=16), seed=1)
    tok = load_tokenizer(tiny_toy.model_dir)
    model = load_model(tiny_toy.model_dir, device="cpu", dtype="float32")
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    for c in out[0]:
        ids = torch.tensor([prompt_ids + list(c.token_ids)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
        expected = sum(logp[len(prompt_ids) - 1 + t, tok_id].item() for t, tok_id in enumerate(c.token_ids))
        assert c.logprob == pytest.approx(expected, abs=1e-4)
    # and token_logprobs agrees on a left-padded batch
    pad = tok.pad_token_id
    seq = prompt_ids + list(out[0][0].token_ids)
    batch = torch.tensor([[pad, pad, *seq], [*seq, *([pad] * 2)]])
    mask = torch.tensor([[0, 0, *[1] * len(seq)], [*[1] * len(seq), 0, 0]])
    lp = token_logprobs(model, batch[:1], mask[:1], 2 + len(prompt_ids))
    assert lp.sum().item() == pytest.approx(out[0][0].logprob, abs=1e-4)


# Sampling log-probabilities against a full forward pass over the finished sequences: fp32 on
# CPU, the KV-cached decode sums in another order, so they agree to float rounding, not bit for
# bit. Measured: at most 2.2e-5 per token over 144 responses of the demo's toy model (1e-6 on
# the tiny test model); the bound is 1e-4.
TOKEN_LOGPROB_TOLERANCE = 1e-4


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_hf_token_logprobs_equal_a_recomputation_at_any_temperature(sampler, temperature, top_p):
    # they are the raw model's (before temperature and top-p), the quantity the trainer recomputes
    out = sampler.generate(PROMPTS, Settings(n=3, temperature=temperature, top_p=top_p, max_new_tokens=20), seed=3)
    tok = sampler.tokenizer
    texts = sampler.prompt_texts(PROMPTS)
    expected_prompts = tok(texts, add_special_tokens=False)["input_ids"]
    completions = [c for cs in out for c in cs]
    prompt_len = max(len(c.prompt_token_ids) for c in completions)
    width = prompt_len + max(c.n_tokens for c in completions)
    ids = torch.full((len(completions), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(completions):
        assert list(c.prompt_token_ids) == expected_prompts[i // 3]  # tokenized once, by the sampler
        row = [*c.prompt_token_ids, *c.token_ids]
        ids[i, prompt_len - len(c.prompt_token_ids) : prompt_len - len(c.prompt_token_ids) + len(row)] = torch.tensor(
            row
        )
        mask[i, prompt_len - len(c.prompt_token_ids) : prompt_len - len(c.prompt_token_ids) + len(row)] = 1
    recomputed = token_logprobs(sampler.model, ids, mask, prompt_len)
    worst = 0.0
    for i, c in enumerate(completions):
        assert len(c.token_logprobs) == c.n_tokens
        assert c.logprob == pytest.approx(sum(c.token_logprobs), abs=1e-9)
        diff = (torch.tensor(c.token_logprobs) - recomputed[i, : c.n_tokens]).abs().max().item()
        worst = max(worst, diff)
    assert worst < TOKEN_LOGPROB_TOLERANCE


def test_hf_without_logprobs_samples_the_same_responses(sampler):
    with_lp = sampler.generate(PROMPTS, Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24), seed=5)
    without = sampler.generate(
        PROMPTS, Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24, logprobs=False), seed=5
    )
    assert [[c.token_ids for c in cs] for cs in with_lp] == [[c.token_ids for c in cs] for cs in without]
    assert all(math.isnan(c.logprob) and c.token_logprobs is None for cs in without for c in cs)


def test_hf_greedy_and_length_limit(sampler):
    greedy = sampler.generate(PROMPTS, Settings(n=2, temperature=0.0, top_p=1.0, max_new_tokens=24), seed=0)
    assert greedy[0][0].text == greedy[0][1].text  # no sampling: both samples agree
    short = sampler.generate(PROMPTS, Settings(n=1, temperature=1.0, top_p=1.0, max_new_tokens=2), seed=0)
    assert all(c.n_tokens <= 2 for cs in short for c in cs)


def test_hf_job_cut_into_pieces_on_batch_boundaries_samples_as_whole(sampler):
    """What the Ray executor relies on: a piece sampled with the job's seed and its start equals
    those rows of the whole job; a start inside a batch is refused (it would reuse a batch's seed)."""
    small = HFSampler(sampler.model, sampler.tokenizer, batch_size=2, progress=False)
    prompts = [[{"role": "user", "content": f"Compute {a}+{a + 3}."}] for a in range(5)]
    settings = Settings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=12)
    whole = small.generate(prompts, settings, seed=3)
    assert small.generate(prompts[2:], settings, seed=3, start=2) == whole[2:]
    assert small.generate(prompts[4:], settings, seed=3, start=4) == whole[4:]
    assert small.generate(prompts[2:], settings, seed=3) != whole[2:]  # start matters: batch 0's seed otherwise
    with pytest.raises(ValueError, match="start=1 is not a multiple of the batch size 2"):
        small.generate(prompts[1:], settings, seed=3, start=1)


def test_hf_sampler_needs_a_model():
    with pytest.raises(ValueError, match="model_path"):
        HFSampler()


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("tgi")


# ---------------------------------------------------------------------------------------------
# vLLM: a stand-in with vLLM's RequestOutput / CompletionOutput attribute layout. vLLM itself
# cannot be installed on this CPU-only machine (no CPU wheel on PyPI); the test below the
# stand-in runs the real thing where vllm imports.
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    logprobs: int | None = None
    seed: int | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list | None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True
    prompt_logprobs: list | None = None


@dataclass
class FakeLLM:
    tokenizer: object
    calls: list = field(default_factory=list)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outs = []
        for r, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True)):
            finish = "stop" if r % 2 else "length"
            completions = [
                CompletionOutput(k, f"r{r} \\boxed{{{r}}}", [1, 2, r], -0.5 * (r + 1), None, finish)
                for k in range(params.n)
            ]
            outs.append(RequestOutput(str(r), prompt, [0], completions))
        return outs


def test_vllm_adapter_sends_one_seeded_request_per_response(tiny_toy):
    llm = FakeLLM(load_tokenizer(tiny_toy.model_dir))
    sampler = VLLMSampler(llm=llm, sampling_params_cls=FakeSamplingParams, progress=False)
    out = sampler.generate(PROMPTS, Settings(n=3, temperature=0.7, top_p=0.9, max_new_tokens=512), seed=100)
    ((texts, params),) = llm.calls
    # 2 prompts x 3 samples = 6 requests, prompt-major; the chat template applied
    assert len(texts) == 6 and texts[0] == texts[2] != texts[3]
    assert texts[0].startswith("<|im_start|>user\nCompute 3+4.")
    assert [p.seed for p in params] == [request_seed(100, i, k) for i in range(2) for k in range(3)]
    assert len({p.seed for p in params}) == 6  # no two responses share a random stream
    assert all((p.n, p.temperature, p.top_p, p.max_tokens, p.logprobs) == (1, 0.7, 0.9, 512, 0) for p in params)
    # requests 3, 4, 5 are prompt 1's samples 0, 1, 2
    assert [c.text for c in out[1]] == ["r3 \\boxed{3}", "r4 \\boxed{4}", "r5 \\boxed{5}"]
    assert [c.finish_reason for c in out[0]] == ["length", "stop", "length"]
    assert out[0][2] == Completion("r2 \\boxed{2}", (1, 2, 2), -1.5, "length", prompt_token_ids=(0,))
    sampler.generate(PROMPTS, Settings(n=1, temperature=1.0, top_p=1.0, max_new_tokens=8, logprobs=False), seed=0)
    assert all(p.logprobs is None for p in llm.calls[-1][1])  # no log-probabilities asked for
    # a piece of the job starting at prompt 1 asks for prompt 1's seeds, as the whole job did
    sampler.generate(PROMPTS[1:], Settings(n=3, temperature=0.7, top_p=0.9, max_new_tokens=512), seed=100, start=1)
    assert [p.seed for p in llm.calls[-1][1]] == [p.seed for p in params[3:]]


def test_request_seeds_are_distinct_and_stable():
    seeds = {request_seed(s, i, k) for s in range(3) for i in range(200) for k in range(8)}
    assert len(seeds) == 3 * 200 * 8  # seed + i + k would collide 200-fold here
    assert all(0 <= x < 2**63 for x in seeds)
    # not Python's per-process salted hash: another process derives the same seeds
    code = "from sent.sampling.base import request_seed; print(request_seed(7, 3, 2), request_seed(0, 0, 0))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in other] == [request_seed(7, 3, 2), request_seed(0, 0, 0)]


def test_hf_stops_at_the_generation_configs_eos_as_vllm_does(sampler):
    """vLLM stops at the tokenizer's EOS and at the generation config's EOS ids; so does the hf
    sampler. An instruct model's end of turn is often only in the generation config: here a
    token the tiny model writes in every response is made one, and every response ends at it."""
    import copy

    from sent.sampling.hf import HFSampler, stop_token_ids

    model, tok = sampler.model, sampler.tokenizer
    settings = Settings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24)
    plain = sampler.generate(PROMPTS, settings, seed=1)
    # the first token of every response (a response always writes one): make it an end of turn
    first = {c.token_ids[0] for cs in plain for c in cs if c.token_ids}
    stop = min(first - {tok.eos_token_id})
    assert stop_token_ids(model, tok) == sorted({tok.eos_token_id, *_as_list(model.generation_config.eos_token_id)})
    turned = copy.deepcopy(model)
    turned.generation_config.eos_token_id = [tok.eos_token_id, stop]
    assert stop_token_ids(turned, tok) == sorted({tok.eos_token_id, stop})
    out = HFSampler(turned, tok, batch_size=sampler.batch_size, progress=False).generate(PROMPTS, settings, seed=1)
    for cs_plain, cs in zip(plain, out, strict=True):
        for p, c in zip(cs_plain, cs, strict=True):  # same seed: the same tokens up to the first stop
            ends = (tok.eos_token_id, stop)
            cut = next((i + 1 for i, t in enumerate(p.token_ids) if t in ends), len(p.token_ids))
            assert c.token_ids == p.token_ids[:cut]
            assert c.finish_reason == ("stop" if c.token_ids and c.token_ids[-1] in ends else "length")


def _as_list(ids):
    return [] if ids is None else list(ids) if isinstance(ids, list | tuple) else [ids]
