"""The step grammar (`sent.steps`): parsing, order, what a step needs and what it outdates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sent.steps import Step, StepError, default_steps, depends_on, last_trained, plan_steps, reused_inputs

from sent_testing import ROOT


@pytest.fixture(scope="module")
def cfg():
    from sent.config_loading import load_config

    return load_config(ROOT / "configs" / "toy.yaml")


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["", " ", "  "]))
def test_a_step_reads_back_as_it_was_written(stage, pad):
    step = Step.parse(f"{pad}train:{stage}{pad}")
    assert step == Step.train(stage) and step.stage == stage and step.is_train
    assert str(step) == f"train:{stage}" and Step.parse(str(step)) == step
    rescore = Step.parse(f"{pad}rescore:{stage}")
    assert rescore == Step.rescore(stage) and rescore.is_rescore and not rescore.is_train
    assert str(rescore) == f"rescore:{stage}" and Step.parse(str(rescore)) == rescore
    for name in ("bootstrap", "curate", "eval:base", "eval"):
        assert str(Step.parse(pad + name)) == name and Step.parse(name).stage is None


@pytest.mark.parametrize(
    "text", ["train", "train:", "train:x", "train:-1", "Train:1", "eval:1", "evaluate", "rescore", "curate:1", ""]
)
def test_an_unknown_step_is_an_error_that_names_it(text):
    with pytest.raises(StepError) as raised:
        Step.parse(text)
    assert str(raised.value) == f"unknown step {text!r}: use bootstrap, curate, train:K, rescore:K, eval:base, eval"


def test_steps_sort_in_the_order_they_run():
    # stage 10 after stage 2: by number, not by text
    # rescore:k after train:k (it samples stage k's model) and before train:k+1 (which reads it)
    names = ["eval", "train:10", "rescore:2", "eval:base", "train:3", "train:2", "curate", "bootstrap"]
    assert [str(s) for s in sorted(Step.parse(n) for n in names)] == [
        "bootstrap",
        "curate",
        "train:2",
        "rescore:2",
        "train:3",
        "train:10",
        "eval:base",
        "eval",
    ]


def art(step, path="/nonexistent", kind="model"):
    from tasks.context import Artefact

    return Artefact(kind=kind, step=step, path=path, digest="name:x")


def test_default_steps_and_ordering(cfg):
    from sent.steps import default_steps, plan_steps

    assert default_steps(cfg) == ["bootstrap", "curate", "train:1", "train:2", "eval:base", "eval"]
    assert plan_steps(cfg, None, {}) == default_steps(cfg)
    assert plan_steps(cfg, ["eval", " train:1", "curate", "curate"], {}) == ["curate", "train:1", "eval"]
    reused = {"curate": art("curate"), "train:1": art("train:1")}
    assert plan_steps(cfg, ["eval", "train:2"], reused) == ["train:2", "eval"]


def test_what_a_recomputed_step_outdates():
    assert depends_on("train:2", "curate") and depends_on("eval", "curate") and not depends_on("eval:base", "curate")
    assert depends_on("train:3", "train:2") and not depends_on("train:1", "train:2")
    assert depends_on("eval", "train:1") and not depends_on("curate", "train:1")
    assert all(depends_on(s, "bootstrap") for s in ("curate", "train:1", "eval:base", "eval"))
    assert not depends_on("train:1", "eval")
    # rescore:k samples stage k's model from the curriculum before it; train:k+1 on reads it
    assert (
        depends_on("rescore:2", "train:2") and depends_on("rescore:2", "train:1") and depends_on("rescore:1", "curate")
    )
    assert not depends_on("rescore:1", "train:2") and not depends_on("train:2", "rescore:2")
    assert (
        depends_on("train:3", "rescore:2") and depends_on("rescore:3", "rescore:2") and depends_on("eval", "rescore:1")
    )
    assert not depends_on("eval:base", "rescore:1")


def test_reused_inputs_are_only_what_the_planned_steps_read(cfg):

    reused = {s: art(s) for s in ("curate", "train:1", "train:2", "train:10", "eval")}
    assert reused_inputs(cfg, ["train:2", "eval"], reused) == ["curate", "train:1"]
    assert reused_inputs(cfg, ["eval"], reused) == ["train:10"]  # numeric, not lexical order
    assert last_trained(reused) == "train:10"
    assert reused_inputs(cfg, ["curate", "train:1"], reused) == []


def test_a_rescored_curriculum_adds_a_rescore_step_between_stages_and_train_reads_it(cfg):
    from sent.steps import curriculum_step

    rescored = cfg.model_copy(
        update={"curriculum": cfg.curriculum.model_copy(update={"mode": "rescored", "n_stages": 3})}
    )
    assert default_steps(rescored) == [
        "bootstrap",
        "curate",
        "train:1",
        "rescore:1",
        "train:2",
        "rescore:2",
        "train:3",
        "eval:base",
        "eval",
    ]
    assert [curriculum_step(rescored, k) for k in (1, 2, 3)] == ["curate", "rescore:1", "rescore:2"]
    assert [curriculum_step(cfg, k) for k in (1, 2)] == ["curate", "curate"]
    reused = {s: art(s) for s in ("curate", "train:1", "rescore:1", "train:2")}
    assert reused_inputs(rescored, ["train:2", "eval"], reused) == ["rescore:1", "train:1"]
    assert reused_inputs(rescored, ["rescore:2", "train:3"], reused) == ["rescore:1", "train:2"]
    assert plan_steps(rescored, ["train:3", "rescore:2"], reused) == ["rescore:2", "train:3"]
    with pytest.raises(StepError, match="train:2 needs a curriculum: add the rescore:1 step"):
        plan_steps(rescored, ["train:2"], {"curate": art("curate"), "train:1": art("train:1")})
    with pytest.raises(StepError, match="rescore:1 needs train:1"):
        plan_steps(rescored, ["rescore:1"], {"curate": art("curate")})
    with pytest.raises(StepError, match=r"rescore steps run between stages, rescore:1\.\.2"):
        plan_steps(rescored, ["rescore:3"], reused)
    with pytest.raises(StepError, match=r"it needs curriculum\.mode=rescored"):
        plan_steps(cfg, ["rescore:1"], reused)


@pytest.mark.parametrize(
    ("steps", "reused", "message"),
    [
        (["train:3"], ["curate", "train:2"], r"train:3: the curriculum has stages 1\.\.2"),
        (["train:1"], [], "train:1 needs a curriculum: add the curate step"),
        (["curate", "train:2"], [], "train:2 starts from stage 1's weights: add train:1"),
        (["eval"], ["curate"], "eval evaluates the last trained stage: add a train step"),
        (["curate", "trian:1"], [], r"unknown steps \['trian:1'\]"),
    ],
)
def test_a_plan_that_lacks_an_input_fails_before_anything_runs(cfg, steps, reused, message):
    with pytest.raises(StepError, match=message):
        plan_steps(cfg, steps, reused)


def test_bootstrap_needs_a_toy_config(cfg):
    no_toy = cfg.model_copy(update={"toy": None})
    with pytest.raises(StepError, match="bootstrap needs a toy section"):
        plan_steps(no_toy, ["bootstrap"], [])
    assert default_steps(no_toy)[0] == "curate"
