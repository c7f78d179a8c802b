"""The ablation's planning, statistics, restaged curricula and report (`sent.ablation`,
`sent.stats`, `sent.curate.restage`). The flow itself runs in `test_ablation_flow.py`."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import yaml

from sent.ablation import AblationError, parse_seeds, plan_ablation
from sent.ablation_report import RunOutcome, markdown_report, summarise
from sent.config import BUILTIN_ARMS
from sent.config_loading import load_config
from sent.stats import mean_interval, pooled_paired_difference

from sent_testing import ROOT, toy_config

TOY = ROOT / "configs" / "toy.yaml"


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def test_mean_interval_known_answer():
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.302653, half width 4.302653 / sqrt(3) = 2.484138
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.ci_low == pytest.approx(2 - 2.484138, abs=1e-5)
    assert iv.ci_high == pytest.approx(2 + 2.484138, abs=1e-5)
    one = mean_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    with pytest.raises(ValueError):
        mean_interval([])


def test_pooled_paired_difference_known_answer():
    # problems a, b, c; seeds 0 and 1 in both arms (seed 2 only in the arm: left out)
    ref = {
        0: {("t", "a"): 10.0, ("t", "b"): 20.0, ("t", "c"): 30.0},
        1: {("t", "a"): 20.0, ("t", "b"): 20.0, ("t", "c"): 40.0},
    }
    arm = {
        0: {("t", "a"): 30.0, ("t", "b"): 20.0, ("t", "c"): 30.0},
        1: {("t", "a"): 40.0, ("t", "b"): 40.0, ("t", "c"): 30.0},
        2: {("t", "a"): 0.0, ("t", "b"): 0.0, ("t", "c"): 0.0},
    }
    # per problem, the mean over seeds of arm - ref: a (20 + 20) / 2 = 20, b (0 + 20) / 2 = 10,
    # c (0 - 10) / 2 = -5; mean 25/3 = 8.3333; sd = sqrt(((35/3)^2 + (5/3)^2 + (40/3)^2) / 2) = 12.5831;
    # half width t(0.975, 2) * sd / sqrt(3) = 4.302653 * 7.26483 = 31.2581
    d = pooled_paired_difference(ref, arm)
    assert d.problems == 3
    assert d.difference == pytest.approx(25 / 3)
    assert d.ci_low == pytest.approx(25 / 3 - 31.2581, abs=1e-3)
    assert d.ci_high == pytest.approx(25 / 3 + 31.2581, abs=1e-3)
    assert d.base == pytest.approx((15 + 20 + 35) / 3) and d.final == pytest.approx((35 + 30 + 30) / 3)
    # a group: problems a and b only (diffs 20 and 10: mean 15)
    assert pooled_paired_difference(ref, arm, keys={("t", "a"), ("t", "b")}).difference == pytest.approx(15.0)
    with pytest.raises(ValueError, match="share no seed"):
        pooled_paired_difference({0: ref[0]}, {2: arm[2]})


def test_pooled_paired_difference_agrees_with_scipy():
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(0)
    keys = [("toy", str(i)) for i in range(40)]
    ref = {s: {k: float(rng.integers(0, 9) * 12.5) for k in keys} for s in range(3)}
    arm = {s: {k: float(rng.integers(0, 9) * 12.5) for k in keys} for s in range(3)}
    d = pooled_paired_difference(ref, arm)
    a = np.array([[ref[s][k] for s in range(3)] for k in keys]).mean(1)
    b = np.array([[arm[s][k] for s in range(3)] for k in keys]).mean(1)
    low, high = stats.ttest_rel(b, a).confidence_interval(0.95)
    assert d.difference == pytest.approx(float((b - a).mean()))
    assert (d.ci_low, d.ci_high) == pytest.approx((low, high))


# --------------------------------------------------------------------------------------------
# arms and plans: validated before anything runs
# --------------------------------------------------------------------------------------------


def test_every_built_in_arm_validates_against_the_toy_config():
    plan = plan_ablation(TOY, seeds="0,1")
    assert [a.name for a in plan.arms] == list(BUILTIN_ARMS)
    assert len(plan.runs) == 2 * len(BUILTIN_ARMS)
    for run in plan.runs:
        cfg = load_config(TOY, list(run.overrides))
        assert cfg.training.seed == run.seed
        assert cfg.seed == 0  # the curation's and the evaluation's seed are shared
    by_name = {r.arm: load_config(TOY, list(r.overrides)) for r in plan.runs if r.seed == 0}
    assert by_name["grpo"].training.loss == "ppo_clip" and by_name["grpo"].curriculum.n_stages == 1
    assert (
        by_name["grpo_curriculum"].training.loss == "ppo_clip" and by_name["grpo_curriculum"].curriculum.n_stages == 2
    )
    assert by_name["sent_random_stages"].curriculum.order == "random"
    assert by_name["sent_one_stage"].curriculum.n_stages == 1 and by_name["sent_one_stage"].training.loss == "sent"


def _config_with_arms(tmp_path, arms: dict) -> str:
    raw = yaml.safe_load(TOY.read_text())
    raw["ablation"] = {"arms": arms}
    path = tmp_path / "ablate.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(
    ("arms", "names", "message"),
    [
        ({}, "grpo,nope", r"unknown arm\(s\) \['nope'\]"),
        ({"bad": ["training.no_such_key=1"]}, "grpo,bad", r"(?s)arm 'bad': .*training\.no_such_key: unknown key"),
        ({"bad": ["training.lr=-1"]}, "grpo,bad", r"(?s)arm 'bad': .*training\.lr"),
        ({"leaky": ["data.limit=10"]}, "grpo,leaky", r"arm 'leaky': \['data.limit=10'\] change a shared setting"),
        ({}, "sent,kl_cov", r"the reference arm 'grpo' is not among the arms"),
        # an arm's name is its directory: nothing may write outside --out
        ({"../..": ["training.lr=1e-5"]}, "grpo,../..", r"arm name\(s\) \['../..'\] must be"),
        ({"/tmp/x": ["training.lr=1e-5"]}, "grpo,/tmp/x", r"arm name\(s\) \['/tmp/x'\] must be"),
    ],
)
def test_a_bad_arm_is_refused_by_name(tmp_path, arms, names, message):
    with pytest.raises(AblationError, match=message):
        plan_ablation(_config_with_arms(tmp_path, arms), arms=names, seeds="0")


def test_config_arms_extend_and_redefine_the_built_ins(tmp_path):
    config = _config_with_arms(tmp_path, {"slow": ["training.lr=1e-5"], "grpo": ["training.loss=ppo_clip"]})
    plan = plan_ablation(config, arms="grpo,slow", seeds=[3])
    assert {a.name: a.overrides for a in plan.arms} == {
        "grpo": ("training.loss=ppo_clip",),
        "slow": ("training.lr=1e-5",),
    }
    assert plan.runs[1].overrides[-1] == "training.seed=3"


def test_seeds_must_be_integers():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_seeds([4, 5]) == [4, 5]
    with pytest.raises(AblationError, match="seed 'x'"):
        parse_seeds("0,x")


# --------------------------------------------------------------------------------------------
# restaged curricula: the shared scores, other stages, nothing sampled
# --------------------------------------------------------------------------------------------


class _NoSampler:
    def generate(self, *args, **kwargs):
        raise AssertionError("a restaged curriculum must not sample")


@pytest.fixture(scope="module")
def scored(tiny_toy, tmp_path_factory):
    from sent.curate import curate

    cfg = toy_config(tiny_toy, "sampling.n=4", "sampling.chunk_size=48", "data.limit=48", "curriculum.shard_rows=8")
    out = tmp_path_factory.mktemp("ablation") / "curation"
    curate(cfg, out=out)
    return cfg, out


def test_random_stages_keep_the_sizes_and_the_scores(scored, tmp_path):
    from sent.curate import restage
    from sent.data_contract import load_curriculum

    cfg, source = scored
    shuffled = cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"order": "random"})})
    result = restage(shuffled, source, tmp_path / "random")
    before = pq.read_table(source / "scores.parquet").to_pylist()
    after = pq.read_table(tmp_path / "random" / "scores.parquet").to_pylist()
    strip = ("stage", "filtered")
    assert [{k: v for k, v in r.items() if k not in strip} for r in after] == [
        {k: v for k, v in r.items() if k not in strip} for r in before
    ]
    sizes = [s["count"] for s in result.manifest["curriculum"]["stages"]]
    assert sizes == [sum(r["stage"] == k for r in before) for k in (1, 2)]
    # the SE ordering is gone: stage 1 is no longer the low-entropy half
    assert [r["stage"] for r in after] != [r["stage"] for r in before]
    assert sum(load_curriculum(tmp_path / "random", k).num_rows for k in (1, 2)) == len(before)
    assert result.manifest["restaged_from"] == str(source.resolve())
    # reused when asked again; a random order is the same for the same seed
    again = restage(shuffled, source, tmp_path / "random")
    assert again.reused and pq.read_table(tmp_path / "random" / "scores.parquet").to_pylist() == after


def test_one_stage_holds_every_problem(scored, tmp_path):
    from sent.curate import restage
    from sent.data_contract import load_curriculum

    cfg, source = scored
    one = cfg.model_copy(update={"curriculum": cfg.curriculum.model_copy(update={"n_stages": 1})})
    restage(one, source, tmp_path / "one")
    assert load_curriculum(tmp_path / "one", 1).num_rows == pq.read_table(source / "scores.parquet").num_rows


def test_restaging_refuses_other_scoring_settings(scored, tmp_path):
    from sent.curate import restage
    from sent.problems import CurationError

    cfg, source = scored
    other = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"n": 8})})
    with pytest.raises(CurationError, match="scored with other sampling settings"):
        restage(other, source, tmp_path / "other")


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _outcome(arm, seed, avg, scores, entropy, penalised=0.0):
    history = [
        {"policy_entropy": h, "n_trained_tokens": 100.0, **({"n_penalised": penalised} if penalised else {})}
        for h in entropy
    ]
    return RunOutcome(arm, seed, {"avg@2": avg, "pass@2": avg, "maj@2": avg}, scores, [history])


def test_summary_numbers_by_hand():
    k1, k2 = ("toy", "1"), ("toy", "2")
    outcomes = [
        _outcome("grpo", 0, 0.30, {k1: 50.0, k2: 0.0}, [0.2, 0.1]),
        _outcome("grpo", 1, 0.50, {k1: 50.0, k2: 50.0}, [0.2, 0.05]),
        _outcome("sent", 0, 0.40, {k1: 100.0, k2: 0.0}, [0.2, 0.15], penalised=3.0),
        _outcome("sent", 1, 0.60, {k1: 100.0, k2: 50.0}, [0.2, 0.18], penalised=1.0),
    ]
    s = summarise(outcomes, reference="grpo", n=2, trained_keys={k1})
    # avg@2 of grpo: seeds 30 and 50 -> mean 40, half width t(0.975, 1) * 14.142 / sqrt(2) = 12.706 * 10 = 127.06
    assert s["arms"]["grpo"]["avg@2"]["mean"] == pytest.approx(40.0)
    assert s["arms"]["grpo"]["avg@2"]["ci_high"] == pytest.approx(40 + 127.062, abs=1e-2)
    # entropy: final 0.1 and 0.05 (mean 0.075); the lowest of each run is its final one here
    assert s["arms"]["grpo"]["entropy_final"]["mean"] == pytest.approx(0.075)
    assert s["arms"]["sent"]["entropy_min"]["mean"] == pytest.approx(0.165)
    # penalised: (3 + 3) / 200 = 3 % and (1 + 1) / 200 = 1 %: mean 2 %; grpo reports no count
    assert s["arms"]["sent"]["penalised_share"]["mean"] == pytest.approx(2.0)
    assert math.isnan(s["arms"]["grpo"]["penalised_share"]["mean"])
    # paired: problem 1 gains 50 in both seeds, problem 2 nothing: +25 over all, +50 on the trained one
    assert s["paired"]["sent"]["all"]["difference"] == pytest.approx(25.0)
    assert s["paired"]["sent"]["trained"]["difference"] == pytest.approx(50.0)
    assert "grpo" not in s["paired"]
    text = markdown_report(s)
    assert "| sent | 2 | 50.00 ± 127.06 |" in text
    assert "| sent | all | 2 | 37.50 | 62.50 | +25.00 |" in text


def test_the_command_line_refuses_a_bad_arm_before_anything_runs(capsys, tmp_path):
    from sent.cli import main

    # no Prefect server is started and no directory is made: the plan fails first
    code = main(["ablate", "--config", str(TOY), "--arms", "grpo,nope", "--out", str(tmp_path / "abl")])
    assert code == 2
    assert "error: unknown arm(s) ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "abl").exists()
    assert main(["ablate", "--config", str(TOY), "--seeds", "0,x"]) == 2
    assert "error: seed 'x' is not an integer" in capsys.readouterr().err


def test_the_collapse_measures_by_hand():
    """pass@k on all and on the trained problems, its paired difference, the answers' spread, the
    entropy window and the fit, from two problems and two seeds worked out by hand."""
    k1, k2 = ("toy", "1"), ("toy", "2")

    def outcome(arm, seed, counts, spread, entropy, accuracy):
        history = [{"policy_entropy": h, "accuracy": a} for h, a in zip(entropy, accuracy, strict=True)]
        scores = {k: 100 * c / n for k, (c, n) in counts.items()}
        results = {"avg@4": sum(scores.values()) / 200, "pass@4": 0.5, "maj@4": 0.5, "pass@1": 0.25}
        return RunOutcome(arm, seed, results, scores, [history], counts=counts, spread=spread)

    flat = [0.3, 0.3, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1]
    law = [1.1 - 0.5 * math.exp(h) for h in flat]  # exactly on R = -0.5 exp(H) + 1.1
    outcomes = [
        outcome("grpo", s, {k1: (1, 4), k2: (0, 4)}, {k1: (0.5, 2), k2: (1.0, 3)}, flat, law) for s in (0, 1)
    ] + [outcome("sent", s, {k1: (2, 4), k2: (1, 4)}, {k1: (0.7, 2), k2: (1.2, 4)}, flat, law) for s in (0, 1)]
    start = RunOutcome("start", 0, {"pass@1": 0.1, "pass@4": 0.2}, {}, [], counts={k1: (1, 4), k2: (1, 4)})
    s = summarise(outcomes, reference="grpo", n=4, trained_keys={k1}, start=start)
    assert s["ks"] == [1, 4]
    grpo, sent = s["arms"]["grpo"]["rows"], s["arms"]["sent"]["rows"]
    # trained problem k1: grpo 1 of 4 right -> pass@1 25, pass@4 100; sent 2 of 4 -> pass@2 = 1 - C(2,2)/C(4,2)
    assert grpo["trained.pass@1"]["mean"] == pytest.approx(25.0) and grpo["trained.pass@4"]["mean"] == 100.0
    assert sent["trained.pass@1"]["mean"] == pytest.approx(50.0)
    assert s["start_rows"]["trained.pass@4"] == 100.0 and s["start_rows"]["pass@1"] == pytest.approx(10.0)
    # paired pass@4: k2 goes from 0 (no right answer) to 100 in both seeds, k1 stays 100: +50 over all
    assert s["paired_pass"]["sent"]["all"]["difference"] == pytest.approx(50.0)
    assert s["paired_pass"]["sent"]["trained"]["difference"] == pytest.approx(0.0)
    # spread: SE over all problems (0.5 + 1.0) / 2 and on the trained one 0.5; distinct 2.5 and 2
    assert grpo["all.se"]["mean"] == pytest.approx(0.75) and grpo["trained.se"]["mean"] == pytest.approx(0.5)
    assert sent["all.distinct"]["mean"] == pytest.approx(3.0) and sent["trained.distinct"]["mean"] == 2.0
    # entropy: first five 0.3, 0.3, 0.2, 0.2, 0.2 -> 0.24; last five 0.1 -> ratio 0.1 / 0.24
    e = s["arms"]["grpo"]
    assert e["entropy_start_window"]["mean"] == pytest.approx(0.24)
    assert e["entropy_ratio"]["mean"] == pytest.approx(0.1 / 0.24)
    assert (e["fit"]["a"], e["fit"]["b"], e["fit"]["ceiling"]) == pytest.approx((0.5, 1.1, 0.6))
    assert e["fit"]["n"] == 20  # both seeds' steps
    text = markdown_report(s)
    assert "| (starting model) | 10.00 | 20.00 |" in text  # pass@1, pass@4 on all problems
    assert "| grpo | 20 | 0.500 ± 0.000 | 1.100 ± 0.000 | 0.600 ± 0.000 | 1.00 |" in text


def test_a_step_without_entropy_does_not_break_the_report():
    # a step whose groups all lacked signal has policy_entropy null in metrics.jsonl
    history = [{"policy_entropy": None, "accuracy": 0.0}, {"policy_entropy": 0.2, "accuracy": 0.5}]
    outcome = RunOutcome("grpo", 0, {"avg@2": 0.5, "pass@2": 0.5, "maj@2": 0.5}, {("toy", "1"): 50.0}, [history])
    s = summarise([outcome], reference="grpo", n=2)
    assert s["arms"]["grpo"]["entropy_final"]["mean"] == pytest.approx(0.2)
    assert math.isnan(s["arms"]["grpo"]["entropy_start"]["mean"])  # the first step had none
    markdown_report(s)


def test_the_online_se_curve_is_drawn_for_the_arms_that_log_it(tmp_path):
    from sent.ablation_report import write_report

    static = [{"policy_entropy": 0.3}, {"policy_entropy": 0.2}]
    online = [{"policy_entropy": 0.3, "online_se_mean": 1.2}, {"policy_entropy": 0.25, "online_se_mean": 0.9}]
    results = {"avg@2": 0.5, "pass@2": 0.5, "maj@2": 0.5}
    outcomes = [
        RunOutcome("sent", 0, results, {("toy", "1"): 50.0}, [static]),
        RunOutcome("sent_online", 0, results, {("toy", "1"): 50.0}, [online]),
    ]
    paths = write_report(summarise(outcomes, reference="sent", n=2), outcomes, tmp_path)
    assert (tmp_path / "online_se_curves.png") in paths and (tmp_path / "entropy_curves.png") in paths
    # without an online arm there is no such plot
    paths = write_report(summarise(outcomes[:1], reference="sent", n=2), outcomes[:1], tmp_path / "static")
    assert [p.name for p in paths if p.name.endswith("curves.png")] == ["entropy_curves.png"]


def test_a_report_from_disk_needs_a_finished_run_and_the_reference(tmp_path):
    from sent.ablation import AblationError
    from sent.ablation_runs import outcomes_on_disk, report_from_disk
    from sent.config_loading import load_config

    cfg = load_config(TOY)
    with pytest.raises(AblationError, match="holds no finished arm x seed run"):
        report_from_disk(cfg, tmp_path, "grpo")
    unfinished = tmp_path / "runs" / "sent" / "seed-0" / "stage-1"
    unfinished.mkdir(parents=True)  # trained part way, never evaluated: not a finished run
    (tmp_path / "runs" / "sent" / "seed-x").mkdir()  # not a seed directory
    assert outcomes_on_disk(tmp_path) == []
