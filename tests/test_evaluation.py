"""Evaluation: pass@k known answers, scoring real reference solutions, errors, the CLI, a model."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sent.evaluation import (
    EvaluationError,
    _sample_stoppably,
    benchmark_path,
    evaluate_model,
    evaluate_responses,
    load_benchmark,
    majority_correct,
    pass_at_k,
    score_benchmark,
)

from sent_testing import read_jsonl, toy_config


def test_pass_at_k_known_answers():
    # c correct of n: 1 - C(n-c, k) / C(n, k)
    assert pass_at_k(16, 0, 8) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 11/12
    assert pass_at_k(5, 4, 2) == 1.0  # fewer than k wrong samples: any k contain a right one
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


@given(st.integers(1, 12), st.data())
def test_pass_at_k_is_the_share_of_k_subsets_with_a_right_answer(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_scoring_with_known_answers(tmp_path):
    bench = tmp_path / "toy.jsonl"
    rows = [{"id": "a", "problem": "p1", "answer": "1/2"}, {"id": "b", "problem": "p2", "answer": "3"}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    responses = {
        "a": ["\\boxed{0.5}", "\\boxed{2}", "no idea", "\\boxed{\\frac{1}{2}}"],  # 2 of 4 right
        "b": ["\\boxed{4}", "\\boxed{4}", "\\boxed{3}", "\\boxed{5}"],  # 1 of 4; majority 4 is wrong
    }
    metrics, details = score_benchmark("toy", load_benchmark(bench), responses, ks=[1, 2, 4, 8])
    assert metrics["avg@4"] == pytest.approx(3 / 8)
    assert metrics["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert metrics["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert metrics["pass@4"] == 1.0 and "pass@8" not in metrics  # k > n is not reported
    assert metrics["maj@4"] == 0.5  # a: 0.5 and \frac12 form the largest class; b: 4 wins
    # a: classes {0.5, 1/2}, {2} and the missing answer alone: p = 1/2, 1/4, 1/4, SE = 0.5 ln 2 + 0.5 ln 4;
    # b: {4, 4}, {3}, {5}: the same SE. Distinct answers: 2 (the missing one is none) and 3
    assert metrics["se@4"] == pytest.approx(1.5 * math.log(2))
    assert metrics["distinct@4"] == pytest.approx(2.5)
    assert len(details) == 8 and details[2] == {
        "benchmark": "toy",
        "id": "a",
        "sample": 2,
        "response": "no idea",
        "answer": None,
        "correct": False,
    }


def test_answer_spread_of_hand_made_answers():
    from sent.evaluation import AnswerSpread

    all_same = AnswerSpread.of(["4", "\\frac{8}{2}", "4.0", "4"])  # one value, three spellings
    assert (all_same.majority, all_same.entropy, all_same.distinct) == ("4", 0.0, 1)
    none = AnswerSpread.of([None, " ", None])  # no answer at all: three classes of one, no answer counted
    assert none.majority is None and none.entropy == pytest.approx(math.log(3)) and none.distinct == 0
    spread = AnswerSpread.of(["1", "2", "3", "4", "1", "2", "3", "4"])
    assert spread.entropy == pytest.approx(math.log(4)) and spread.distinct == 4 and spread.majority == "1"


def test_markdown_shows_shares_in_points_and_the_spread_as_it_is():
    from sent.evaluation import markdown_table

    table = markdown_table(
        {"toy": {"problems": 2.0, "n": 4.0, "pass@1": 0.375, "se@4": 1.04, "distinct@4": 2.5}},
        {"pass@1": 0.375, "se@4": 1.04, "distinct@4": 2.5},
    )
    assert "| toy | 2 | 37.50 | 1.040 | 2.500 |" in table


def test_majority_vote_ties_go_to_the_first_class():
    assert majority_correct(["1", "2", None, None], "1")
    assert not majority_correct(["2", "1"], "1")
    assert not majority_correct([None, None], "1")


def test_math500_reference_solutions_score_about_100(shared_data):
    # the reference solutions as "responses": every metric must be (almost) perfect
    solutions = read_jsonl(shared_data / "train" / "math500_solutions.jsonl")
    responses = {r["id"]: [r["solution"]] for r in solutions}
    per, _ = evaluate_responses(responses, ["math500"], data_dir=shared_data / "benchmarks", ks=[1])
    print(f"MATH500 reference solutions: avg@1 {per['math500']['avg@1']:.4f}")
    assert per["math500"]["avg@1"] >= 0.98 and per["math500"]["problems"] == 500


def test_all_paper_benchmarks_load(shared_data):
    sizes = {
        name: len(load_benchmark(benchmark_path(name, shared_data / "benchmarks")))
        for name in ("aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva")
    }
    assert sizes == {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "olympiadbench": 674, "minerva": 272}


def test_bad_benchmarks_are_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match="unknown benchmark 'gsm9k'"):
        benchmark_path("gsm9k", tmp_path)
    with pytest.raises(EvaluationError, match="not found"):
        load_benchmark(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "problem": "p", "answer": "1"}\n{"id": "y", "problem": "", "answer": "2"}\n')
    with pytest.raises(EvaluationError, match=r"bad\.jsonl:2: field 'problem'"):
        load_benchmark(bad)
    bad.write_text('{"id": "x", "problem": "p", "answer": "1"}\nnot json\n')
    with pytest.raises(EvaluationError, match=r"bad\.jsonl:2: not valid JSON"):
        load_benchmark(bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "x", "problem": "p", "answer": "1"}\n')
    with pytest.raises(EvaluationError, match="no responses"):
        score_benchmark("good", load_benchmark(good), {}, [1])
    with pytest.raises(EvaluationError, match="same number"):
        good.write_text('{"id": "x", "problem": "p", "answer": "1"}\n{"id": "z", "problem": "q", "answer": "2"}\n')
        score_benchmark("good", load_benchmark(good), {"x": ["a"], "z": ["a", "b"]}, [1])


def test_cli_scores_responses_from_a_file(shared_data, tmp_path, capsys):
    from sent.cli import main

    rows = read_jsonl(shared_data / "benchmarks" / "amc23.jsonl")
    responses = tmp_path / "responses.jsonl"
    with responses.open("w") as f:
        for r in rows:  # two samples per problem: one right, one wrong
            f.write(json.dumps({"id": r["id"], "response": f"\\boxed{{{r['answer']}}}"}) + "\n")
            f.write(json.dumps({"id": r["id"], "response": "\\boxed{-12345}"}) + "\n")
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--responses",
            str(responses),
            "--benchmarks",
            "amc23",
            "--data-dir",
            str(shared_data / "benchmarks"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["amc23"]["avg@2"] == 0.5 and results["benchmarks"]["amc23"]["pass@1"] == 0.5
    assert pq.read_table(out / "details.parquet").num_rows == 80
    assert "| amc23 | 40 |" in (out / "results.md").read_text() and "| amc23 | 40 |" in capsys.readouterr().out
    assert main(["eval", "--responses", str(responses), "--benchmarks", "nope", "--out", str(out)]) == 2


def test_evaluate_the_tiny_model_on_the_toy_benchmark(tiny_toy, tmp_path):
    cfg = toy_config(tiny_toy, f"toy.data_dir={tiny_toy.test_path.parent}")
    results = evaluate_model(cfg, model_path=tiny_toy.model_dir, benchmarks=["toy"], n=4, out_dir=tmp_path, limit=20)
    toy = results["benchmarks"]["toy"]
    assert toy["problems"] == 20 and toy["n"] == 4
    assert 0 <= toy["avg@4"] <= toy["pass@4"] <= 1 and set(results["mean"]) >= {"pass@1", "pass@4", "avg@4", "maj@4"}
    assert pq.read_table(tmp_path / "details.parquet").num_rows == 80


def test_an_evaluation_sampled_batch_by_batch_is_the_one_sampled_whole_and_stops_between(tiny_toy, tmp_path):
    """A benchmark is sampled one sampler batch at a time (so a SIGTERM is honoured within a
    batch, not after the whole benchmark): its samples are those of the job sampled at once, and
    a stop requested during the first batch ends the evaluation before the second, writing nothing."""
    import signal

    from sent import interrupt
    from sent.config import ModelConfig
    from sent.sampling.base import Settings
    from sent.sampling.configured import build_sampler

    cfg = toy_config(tiny_toy, f"toy.data_dir={tiny_toy.test_path.parent}", "sampling.batch_size=8")
    sampler = build_sampler(cfg, ModelConfig(**{**cfg.model.model_dump(), "path": str(tiny_toy.model_dir)}))
    problems = read_jsonl(tiny_toy.test_path)[:20]
    prompts = [cfg.prompt.messages(p["problem"]) for p in problems]
    settings = Settings(2, cfg.evaluation.temperature, cfg.evaluation.top_p, 16, logprobs=False)
    whole = sampler.generate(prompts, settings, seed=3)
    calls = []

    class Counting:  # the real sampler, counting its calls
        batch_size = sampler.batch_size

        def generate(self, *args, **kwargs):
            calls.append(kwargs["start"])
            return sampler.generate(*args, **kwargs)

    pieces = _sample_stoppably(Counting(), prompts, settings, 3, "toy")
    assert calls == [0, 8, 16] and [[c.text for c in cs] for cs in pieces] == [[c.text for c in cs] for cs in whole]

    class StopsAfterTheFirst(Counting):
        def generate(self, *args, **kwargs):
            signal.raise_signal(signal.SIGTERM)  # as `kill -TERM` during the batch
            return super().generate(*args, **kwargs)

    calls.clear()
    with interrupt.handle_signals(), pytest.raises(interrupt.Interrupted, match="while evaluating toy"):
        _sample_stoppably(StopsAfterTheFirst(), prompts, settings, 3, "toy")
    assert calls == [0]
