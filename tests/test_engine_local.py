"""The local GRPO engine on the tiny toy model: every loss trains, stages chain, resume after a
crash (in-process and kill -9) reproduces the uninterrupted metrics exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sent.curate import curate
from sent.engines.local import LocalEngine, TrainingError, train_stage

from sent_testing import ROOT, toy_config

SMALL = [
    "training.train_batch_size=8",
    "training.mini_batch_size=4",
    "training.micro_batch_size=8",
    "training.group_size=4",
    "training.max_response_tokens=24",
    "training.save_every=2",
    "training.epochs_per_stage=20",
    "training.filter_groups=false",
]


@pytest.fixture(scope="module")
def curriculum(tiny_toy, tmp_path_factory):
    cfg = toy_config(tiny_toy, "sampling.n=4", "sampling.chunk_size=48")
    out = tmp_path_factory.mktemp("engine") / "curriculum"
    curate(cfg, out=out, limit=48)
    return out


def cfg_for(tiny_toy, *extra):
    return toy_config(tiny_toy, *SMALL, *extra)


def weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


@pytest.mark.parametrize("loss", ["ppo_clip", "kl_cov", "clip_cov", "entropy_mask", "sent"])
def test_every_registered_loss_trains(tiny_toy, curriculum, tmp_path, loss):
    cfg = cfg_for(tiny_toy, f"training.loss={loss}", "training.policy_loss.kl_cov_ratio=0.05")
    result = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=3, progress=False)
    assert result.steps == 3 and len(result.history) == 3
    m = result.history[-1]
    for key in (
        "reward_mean",
        "accuracy",
        "policy_entropy",
        "response_length",
        "grad_norm",
        "pg_loss",
        "ppo_kl",
        "step_time",
        "tokens_per_s",
        "groups_with_signal",
    ):
        assert math.isfinite(m[key]), key
    assert m["policy_entropy"] > 0
    # a step whose groups all got equal rewards has zero advantages and (for most losses) no gradient;
    # every step with a mixed group must move the weights
    with_signal = [h for h in result.history if h["groups_with_signal"] > 0]
    assert with_signal, "no group with mixed rewards: the fixture model is too weak for this test"
    assert all(h["grad_norm"] > 0 for h in with_signal)
    if loss == "sent":
        assert all(0 < h["n_penalised"] < h["n_low_entropy"] < h["n_valid_tokens"] for h in result.history)
    before, after = weights(tiny_toy.model_dir), weights(result.final_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    lines = (tmp_path / "stage-1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1.0, 2.0, 3.0]


def test_reference_kl_and_entropy_bonus(tiny_toy, curriculum, tmp_path):
    # one mini-batch per step: step 1 updates once, from the reference itself
    cfg = cfg_for(tiny_toy, "training.ref_kl_coef=0.01", "training.entropy_coeff=0.001", "training.mini_batch_size=8")
    result = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=2, progress=False)
    assert result.history[0]["ref_kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at the reference
    assert result.history[1]["ref_kl"] > 0  # and has moved after one update


def test_stages_chain_and_a_finished_stage_is_not_retrained_silently(tiny_toy, curriculum, tmp_path):
    cfg = cfg_for(tiny_toy)
    with pytest.raises(TrainingError, match="train stage 1 first"):
        LocalEngine(cfg, stage=2, curriculum_dir=curriculum, run_dir=tmp_path)
    s1 = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=1, progress=False)
    s2 = train_stage(cfg, stage=2, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=1, progress=False)
    assert s2.start_model == str(s1.final_dir)
    with pytest.raises(TrainingError, match="already finished"):
        LocalEngine(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path)
    again = train_stage(
        cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=1, fresh=True, progress=False
    )
    assert again.steps == 1 and list(tmp_path.glob("stage-1.old-*"))  # the old run is kept


def test_crash_then_resume_reproduces_the_uninterrupted_metrics(tiny_toy, curriculum, tmp_path):
    cfg = cfg_for(tiny_toy)
    clean = train_stage(
        cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "clean", max_steps=4, progress=False
    )

    class Crash(Exception):
        pass

    def crash_at_3(step, _metrics):
        if step == 3:
            raise Crash  # after the step-2 checkpoint, before step 4

    with pytest.raises(Crash):
        train_stage(
            cfg,
            stage=1,
            curriculum_dir=curriculum,
            run_dir=tmp_path / "crash",
            max_steps=4,
            callback=crash_at_3,
            progress=False,
        )
    ckpt = tmp_path / "crash" / "stage-1" / "checkpoints" / "step-000002"
    # the resume state loads without unpickling arbitrary objects (a run directory from elsewhere
    # cannot run code); step, history and the other RNG states are JSON
    assert set(torch.load(ckpt / "state.pt", weights_only=True)) == {"optimizer", "scheduler", "torch_rng"}
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2
    resumed = train_stage(
        cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "crash", max_steps=4, progress=False
    )
    from sent.data_contract import json_safe  # NaN -> None, so that "no value" compares equal

    timing = {"step_time", "sampling_time", "tokens_per_s"}

    def strip(history):
        return [json_safe({k: v for k, v in m.items() if k not in timing}) for m in history]

    assert strip(resumed.history) == strip(clean.history)
    a, b = weights(clean.final_dir), weights(resumed.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_kill_9_then_rerun_continues_with_the_same_metrics(tiny_toy, curriculum, tmp_path):
    args = [
        "--config",
        str(ROOT / "configs" / "toy.yaml"),
        "--stage",
        "1",
        "--curriculum",
        str(curriculum),
        "--max-steps",
        "4",
        f"model.path={tiny_toy.model_dir}",
        *SMALL,
    ]
    cmd = [sys.executable, "-m", "sent.cli", "train"]
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "clean")], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "killed" / "stage-1" / "checkpoints" / "step-000002" / "state.pt"
    deadline = time.time() + 300
    while not ckpt.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "killed")], check=True, capture_output=True, timeout=600)

    def curve(run):
        rows = [json.loads(x) for x in (tmp_path / run / "stage-1" / "metrics.jsonl").read_text().splitlines()]
        return [
            (r["step"], r["accuracy"], r["policy_entropy"], r["pg_loss"], r["grad_norm"], r["n_penalised"])
            for r in rows
        ]

    assert curve("killed") == curve("clean")


def test_a_checkpoint_without_its_json_state_is_refused_not_unpickled(tiny_toy, curriculum, tmp_path):
    cfg = cfg_for(tiny_toy)

    def crash_at_3(step, _metrics):
        if step == 3:
            raise KeyError("crash after the step-2 checkpoint")

    with pytest.raises(KeyError):
        train_stage(
            cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=4, callback=crash_at_3, progress=False
        )
    ckpt = tmp_path / "stage-1" / "checkpoints" / "step-000002"
    (ckpt / "state.json").unlink()  # as written by an older version, which pickled everything
    with pytest.raises(TrainingError, match="older version"):
        train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=4, progress=False)


def test_one_trainer_per_stage_directory(tiny_toy, curriculum, tmp_path):
    from sent.locks import LockedError, exclusive

    cfg = cfg_for(tiny_toy)
    with exclusive(tmp_path / "stage-1", "training of stage 1"), pytest.raises(LockedError, match=f"PID {os.getpid()}"):
        train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=1, progress=False)


@pytest.mark.parametrize(
    ("entropies", "collapsed"),
    [
        # no group had signal at first: the start is the first finite value (1.0), so 0.4 collapses
        ([float("nan"), 1.0, 0.8, 0.4, 0.3], [False, False, False, True, True]),
        ([1.0, float("nan"), 0.6], [False, False, False]),  # 0.6 >= 0.5 * 1.0
        ([float("nan")] * 3, [False] * 3),
    ],
)
def test_entropy_collapse_starts_from_the_first_finite_entropy(entropies, collapsed):
    from sent.engines.local import EntropyWatch

    watch = EntropyWatch(0.5)
    seen = [watch.update(h) for h in entropies]
    assert [c for c, _ in seen] == collapsed
    assert sum(first for _, first in seen) == (1 if any(collapsed) else 0)  # warned once
