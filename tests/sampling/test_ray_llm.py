"""vLLM replicas through ray.data.llm (sent.sampling.ray_llm), and evaluation on Ray Data.

vLLM cannot run on this CPU-only machine (no CPU wheel on PyPI). What can be real is: the processor
config against ray.data.llm's own config class, the output mapping against its own ``vLLMOutputData``,
and a real local Ray Data pipeline in which only the engine is a stand-in (`_engine`, below) that
answers each request from its seed, as vLLM's seeded sampling does. The local ``vllm`` sampler gets
the same stand-in behind vLLM's ``LLM.generate`` interface, so the two executors can be compared row
for row. Evaluation on Ray runs the real ``hf`` sampler.
"""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import pytest

from sent.config_loading import load_config
from sent.curate import curate
from sent.sampling.base import Completion, Settings
from sent.sampling.pieces import Piece
from sent.sampling.vllm import VLLMSampler

from sent_testing import ROOT, parquet_difference, toy_config

pytest.importorskip("ray.data.llm", reason="needs Ray Data's llm module (it comes with ray[data])")
from ray.data.llm import vLLMEngineProcessorConfig
from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMOutputData

from sent.sampling import ray_llm

PRESETS = sorted((ROOT / "configs" / "paper").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_the_paper_presets_make_a_valid_processor_config(path):
    cfg = load_config(path)
    config = ray_llm.processor_config(cfg, cfg.model)
    assert isinstance(config, vLLMEngineProcessorConfig)  # validated by ray.data.llm's own class
    engine = config.engine_kwargs
    assert config.concurrency == cfg.ray.replicas and config.batch_size == cfg.ray.batch_size
    assert engine["tensor_parallel_size"] == cfg.sampling.tensor_parallel_size
    assert config.concurrency * engine["tensor_parallel_size"] == 8  # one node of 8 GPUs
    assert config.model_source == engine["tokenizer"] == cfg.model.path
    assert engine["max_model_len"] == cfg.data.max_prompt_tokens + cfg.sampling.max_new_tokens
    assert (engine["dtype"], engine["seed"], engine["task_type"]) == ("bfloat16", 0, "generate")
    # the template is applied by us and the engine detokenizes: no extra CPU stages
    assert not (config.chat_template_stage or config.tokenize_stage or config.detokenize_stage)
    # the dump round-trips through the class (what build_processor receives)
    assert vLLMEngineProcessorConfig(**config.model_dump()) == config


def test_request_rows_seed_every_response_as_the_local_sampler_does():
    from sent.sampling.base import request_seed

    pieces = [Piece("a", [[], []], seed=5, start=0), Piece("b", [[]], seed=5, start=2)]
    rows = ray_llm.request_rows(pieces, Settings(3, 0.7, 0.9, 64), [["p0", "p1"], ["p2"]])
    assert len(rows) == 9 and [r["prompt"] for r in rows[::3]] == ["p0", "p1", "p2"]
    # piece b starts at position 2 of the job: its responses take the job's seeds for prompt 2
    assert [r["sampling_params"]["seed"] for r in rows] == [request_seed(5, i, k) for i in range(3) for k in range(3)]
    assert rows[0]["sampling_params"] == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "seed": request_seed(5, 0, 0),
        "detokenize": True,
        "logprobs": 0,
    }
    no_lp = ray_llm.request_rows(pieces, Settings(1, 1.0, 1.0, 8, logprobs=False), [["p0", "p1"], ["p2"]])
    assert "logprobs" not in no_lp[0]["sampling_params"]


def _output(tokens, lps, *, text="t \\boxed{1}"):
    """A row as ray.data.llm's engine stage emits it, built by its own class."""
    logprobs = [{t: {"logprob": lp, "rank": 1, "decoded_token": "x"}} for t, lp in zip(tokens, lps, strict=True)]
    out = vLLMOutputData(
        prompt="q",
        prompt_token_ids=[7, 8],
        num_input_tokens=2,
        generated_tokens=tokens,
        generated_text=text,
        num_generated_tokens=len(tokens),
        logprobs=logprobs,
    )
    return {"key": "c0", "position": 1, "sample": 2, **out.model_dump()}


@pytest.mark.parametrize(
    ("tokens", "finish"),
    [
        ([5, 6, 2], "stop"),  # ended on the end-of-sequence token (2) before the budget of 4
        ([5, 6, 7, 2], "stop"),  # ended on it with the budget's last token
        ([5, 6, 7, 8], "length"),  # budget used up, no end token
        ([5, 6], "stop"),  # shorter than the budget: a stop condition ended it
    ],
)
def test_an_output_row_becomes_the_completion_the_local_sampler_makes(tokens, finish):
    lps = [-0.25 * (i + 1) for i in range(len(tokens))]
    row = ray_llm.completion_row(_output(tokens, lps), max_tokens=4, eos_ids=[2], logprobs=True)
    assert (row["key"], row["position"], row["sample"]) == ("c0", 1, 2)
    c = Completion(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(row["completion"]).items()})
    # the sum of the sampled tokens' log-probabilities: vLLM's cumulative_logprob
    assert c == Completion("t \\boxed{1}", tuple(tokens), math.fsum(lps), finish, prompt_token_ids=(7, 8))
    # Arrow may hand the per-token mappings back with string keys
    as_strings = _output(tokens, lps)
    as_strings["logprobs"] = [{str(k): v for k, v in d.items()} for d in as_strings["logprobs"]]
    assert ray_llm.completion_row(as_strings, max_tokens=4, eos_ids=[2], logprobs=True) == row
    without = {**_output(tokens, lps), "logprobs": None}
    unasked = ray_llm.completion_row(without, max_tokens=4, eos_ids=[2], logprobs=False)
    assert math.isnan(json.loads(unasked["completion"])["logprob"])


def test_regroup_rebuilds_pieces_and_names_what_was_lost():
    pieces = [Piece("a", [[], []], 0), Piece("b", [[]], 0)]

    def row(key, i, k):
        c = Completion(f"{key}{i}{k}", (1,), -1.0, "stop")
        return {"key": key, "position": i, "sample": k, "completion": json.dumps(c.__dict__)}

    rows = [row("a", 1, 1), row("b", 0, 0), row("a", 0, 0), row("b", 0, 1), row("a", 1, 0), row("a", 0, 1)]
    got = list(ray_llm.regroup(rows, pieces, 2))
    assert [k for k, _ in got] == ["b", "a"]  # as each piece completes
    assert [[c.text for c in g] for g in got[1][1]] == [["a00", "a01"], ["a10", "a11"]]
    with pytest.raises(ray_llm.RayExecutorError, match=r"lost responses: \{'a': 1\}"):
        list(ray_llm.regroup(rows[:-1], pieces, 2))


def test_installed_ray_and_vllm_are_checked_against_rays_llm_extra():
    from importlib import metadata

    from packaging.version import Version

    if Version(metadata.version("ray")) < Version("2.56"):
        pytest.skip("ray below 2.56: its llm extra admits verl's vllm 0.24")
    problem = ray_llm.vllm_mismatch("0.24.0")  # verl 0.9's pin
    assert problem is not None and "vllm 0.24.0 is installed" in problem and "llm extra asks for vllm==" in problem


# --------------------------------------------------------------------------------------------
# the whole vLLM path on a real local Ray, with a stand-in engine
# --------------------------------------------------------------------------------------------

SMALL = ["sampling.n=4", "sampling.chunk_size=10", "sampling.batch_size=10", "sampling.max_new_tokens=6"]
VLLM = ["sampling.backend=vllm", "curriculum.shard_rows=16"]
LIMIT = 30


def _response(seed: int, max_tokens: int, eos: int) -> tuple[list[int], str, list[float], str]:
    """What the stand-in engine answers to a request with this seed: tokens, text, their
    log-probabilities and the finish reason. Half stop on ``eos`` somewhere within the budget
    (the budget's last token included), half use the whole budget."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        tokens = [rng.randrange(10, 50) for _ in range(rng.randint(0, max_tokens - 1))] + [eos]
        finish = "stop"
    else:
        tokens = [rng.randrange(10, 50) for _ in range(max_tokens)]
        finish = "length"
    return tokens, f"so \\boxed{{{rng.randint(0, 3)}}}", [-rng.random() for _ in tokens], finish


def _engine(row: dict) -> dict:
    """Stand-in for ray.data.llm's vLLM engine stage (vLLM cannot run here): answers from the
    request's seed, in the stage's own output class, with the request's columns carried over."""
    params = row.pop("sampling_params")
    tokens, text, lps, _ = _response(params["seed"], params["max_tokens"], row.pop("eos"))
    logprobs = [{t: {"logprob": lp, "rank": 1, "decoded_token": "?"}} for t, lp in zip(tokens, lps, strict=True)]
    out = vLLMOutputData(
        prompt=row["prompt"],
        prompt_token_ids=[1, 2, 3],
        num_input_tokens=3,
        generated_tokens=tokens,
        generated_text=text,
        num_generated_tokens=len(tokens),
        logprobs=logprobs if params.get("logprobs") == 0 else None,
    )
    return {**row, **out.model_dump()}


@dataclass
class _Output:
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    finish_reason: str


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Output]


@dataclass
class _LLM:
    """Stand-in for vllm.LLM with the same answers as `_engine`, for the local vllm sampler."""

    tokenizer: object
    eos: int
    requests: list = field(default_factory=list)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        self.requests += [p.seed for p in params]
        outs = []
        for p in params:
            tokens, text, lps, finish = _response(p.seed, p.max_tokens, self.eos)
            lp = math.fsum(lps) if p.logprobs == 0 else None
            outs.append(_RequestOutput([1, 2, 3], [_Output(text, tokens, lp, finish)]))
        return outs


@dataclass
class _Params:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    logprobs: int | None
    seed: int


@pytest.fixture
def stand_in_engine(monkeypatch, tiny_toy):
    """ray_llm.build_processor replaced: the real request rows and postprocess around `_engine`."""
    from ray import cloudpickle  # Ray serialises with its own copy

    from sent.models import load_tokenizer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    eos = load_tokenizer(tiny_toy.model_dir).eos_token_id
    built = []

    def build(config, postprocess):
        assert isinstance(config, vLLMEngineProcessorConfig)
        built.append(config)
        return lambda ds: ds.map(lambda row: {**row, "eos": eos}).map(_engine).map(postprocess)

    monkeypatch.setattr(ray_llm, "build_processor", build)
    yield eos, built
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_vllm_on_ray_gives_the_local_vllm_curation_row_for_row(stand_in_engine, tiny_toy, tmp_path):
    from sent.models import load_tokenizer

    eos, built = stand_in_engine
    import ray

    on_ray = ["sampling.executor=ray", "ray.replicas=2", "ray.batch_size=7"]
    llm = _LLM(load_tokenizer(tiny_toy.model_dir), eos)
    sampler = VLLMSampler(llm=llm, sampling_params_cls=_Params)
    # a sampler passed in samples in this process, whatever the executor
    local = curate(toy_config(tiny_toy, *SMALL, *VLLM, *on_ray), out=tmp_path / "local", limit=LIMIT, sampler=sampler)
    assert not built and not ray.is_initialized()
    remote = curate(toy_config(tiny_toy, *SMALL, *VLLM, *on_ray), out=tmp_path / "ray", limit=LIMIT)
    assert [c.concurrency for c in built] == [2] and built[0].batch_size == 7
    for name in ["scores.parquet", *[f"samples/part-0000{i}.parquet" for i in range(3)]]:
        assert parquet_difference(remote.out_dir / name, local.out_dir / name) is None
    samples = pq.read_table(local.out_dir / "samples").to_pylist()
    # 4 x 30 requests, each its own seed; both finish reasons came out, and so did a stop on the
    # budget's last token, which only the end token tells from a "length"
    assert len(samples) == len(set(llm.requests)) == 120
    assert {r["finish_reason"] for r in samples} == {"stop", "length"}
    assert any(r["finish_reason"] == "stop" and r["n_tokens"] == 6 for r in samples)


@pytest.mark.slow
def test_evaluation_on_ray_equals_the_local_evaluation(tiny_toy, tmp_path):
    import torch

    from sent.evaluation import evaluate_model

    # 7 problems a benchmark in batches of 3: three pieces each, the last one short
    common = [
        "sampling.batch_size=3",
        "evaluation.n=2",
        "evaluation.k=[1,2]",
        "evaluation.limit=7",
        "evaluation.max_new_tokens=16",
    ]
    local_cfg = toy_config(tiny_toy, *common)
    ray_cfg = toy_config(
        tiny_toy, *common, "sampling.executor=ray", "ray.replicas=1", f"ray.cpus_per_actor={torch.get_num_threads()}"
    )
    local = evaluate_model(local_cfg, model_path=tiny_toy.model_dir, out_dir=tmp_path / "local")
    on_ray = evaluate_model(ray_cfg, model_path=tiny_toy.model_dir, out_dir=tmp_path / "ray")
    assert on_ray["benchmarks"] == local["benchmarks"]
    details = [pq.read_table(tmp_path / d / "details.parquet") for d in ("ray", "local")]
    assert details[0].equals(details[1])
