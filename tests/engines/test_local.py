"""The local GRPO engine on the tiny toy model: every loss trains, stages chain, resume after a
crash (in-process and kill -9) reproduces the uninterrupted metrics exactly."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from sent.curate import curate
from sent.engines.dispatch import train_stage
from sent.engines.local import LocalEngine, TrainingError
from sent.engines.step_metrics import is_timing
from sent.sampling.base import Settings

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


def plain_grpo_steps(cfg, curriculum, n_steps):
    """The local engine's algorithm as it was before the speed work of issue 12, written plainly
    from the library's parts: every sequence of every micro-batch through the forward and
    backward (masked ones too), old log-probabilities from a separate no-grad pass, prompts
    tokenized apart from the sampler. Returns each step's metrics and the final weights."""
    from sent.advantages import grpo_advantages
    from sent.config import loss_config
    from sent.data_contract import load_curriculum
    from sent.engines.local import _batch_order
    from sent.entropy import token_entropy
    from sent.losses import PolicyLossConfig, get_policy_loss, metrics_to_floats
    from sent.models import load_model, load_tokenizer, response_logits_and_logprobs, token_logprobs
    from sent.rewards import compute_score
    from sent.sampling.hf import HFSampler

    t, group = cfg.training, cfg.training.group_size
    tok = load_tokenizer(cfg.model.path)
    policy = load_model(cfg.model.path, device="cpu", dtype=cfg.model.dtype)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    sampler = HFSampler(policy, tok, batch_size=cfg.training.rollout_batch_size, progress=False)
    table = load_curriculum(curriculum, 1).to_pylist()
    order, _ = _batch_order(len(table), cfg)
    loss_fn = get_policy_loss(t.loss)
    history = []
    for step in range(n_steps):
        rows = [table[i] for i in order[step * t.train_batch_size : (step + 1) * t.train_batch_size]]
        prompts = [[dict(m) for m in r["prompt"]] for r in rows]
        outs = sampler.generate(
            prompts,
            Settings(
                n=group, temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_response_tokens, logprobs=False
            ),
            seed=cfg.seed * 1_000_003 + step,
        )
        prompt_ids = tok(sampler.prompt_texts(prompts), add_special_tokens=False)["input_ids"]
        seqs = [(prompt_ids[g], list(c.token_ids)) for g, cs in enumerate(outs) for c in cs]
        rewards = torch.tensor(
            [
                compute_score(None, c.text, row["reward_model"]["ground_truth"])["score"]
                for row, cs in zip(rows, outs, strict=True)
                for c in cs
            ]
        )
        P, R = max(len(p) for p, _ in seqs), max(len(r) for _, r in seqs)
        ids = torch.full((len(seqs), P + R), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, (p, r) in enumerate(seqs):
            ids[i, P - len(p) : P + len(r)] = torch.tensor(p + r)
            mask[i, P - len(p) : P + len(r)] = 1
        groups = torch.arange(len(rows)).repeat_interleave(group)
        seq_adv = grpo_advantages(rewards, groups, norm_by_std=t.norm_adv_by_std)
        adv = seq_adv[:, None].expand(-1, R)
        by_group = rewards.view(-1, group)
        signal = by_group.max(1).values != by_group.min(1).values
        train_mask = mask[:, P:].bool() & (signal[groups] if t.filter_groups else True)[:, None]
        if t.train_samples == "positive":  # only the responses with a positive advantage train
            train_mask = train_mask & (seq_adv > 0)[:, None]
        old = token_logprobs(policy, ids, mask, P, chunk_rows=t.micro_batch_size)
        sums, norms, ent_sum, ent_n = {}, [], 0.0, 0
        policy.train()
        minis = [m0 for _ in range(t.ppo_epochs) for m0 in range(0, len(seqs), t.mini_batch_size * group)]
        for m0 in minis:
            mini = torch.arange(m0, m0 + t.mini_batch_size * group)
            n_tokens, n_seqs = int(train_mask[mini].sum()), int(train_mask[mini].any(-1).sum())
            if n_tokens == 0:
                continue
            lcfg = PolicyLossConfig(
                **{**loss_config(cfg).__dict__, "global_batch_num_tokens": n_tokens, "global_batch_size": n_seqs}
            )
            optimizer.zero_grad()
            pg = 0.0
            for u0 in range(0, len(mini), t.micro_batch_size):
                idx = mini[u0 : u0 + t.micro_batch_size]
                logits, logp = response_logits_and_logprobs(policy, ids[idx], mask[idx], P)
                ent = token_entropy(logits).detach()
                loss, metrics = loss_fn(
                    log_prob=logp,
                    old_log_prob=old[idx],
                    advantages=adv[idx],
                    response_mask=train_mask[idx],
                    entropy=ent,
                    config=lcfg,
                )
                loss.backward()
                pg += float(loss.detach())
                for k, v in metrics_to_floats(metrics).items():
                    sums.setdefault(k, []).append(v)
                ent_sum += float((ent * mask[idx, P:]).sum())
                ent_n += int(mask[idx, P:].sum())
            sums.setdefault("pg_loss", []).append(pg)
            norms.append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), t.grad_clip)))
            optimizer.step()
        policy.eval()
        counts = {"n_low_entropy", "n_penalised", "n_valid_tokens"}
        metrics = {k: float(sum(v)) if k in counts else sum(v) / len(v) for k, v in sums.items()}
        metrics.update(reward_mean=rewards.mean().item(), grad_norm=sum(norms) / len(norms) if norms else 0.0)
        if ent_n:  # a step without a group of mixed rewards trains nothing (its entropy is undefined)
            metrics.update(policy_entropy=ent_sum / ent_n)
        history.append(metrics)
    return history, policy.state_dict()


@pytest.mark.parametrize(
    ("loss", "old_logprobs", "ppo_epochs", "train_samples"),
    [
        ("sent", "sampling", 1, "all"),
        ("sent", "recompute", 1, "all"),
        ("ppo_clip", "sampling", 1, "all"),
        # the collapse regime's shape: every mini-batch trained again after optimizer steps
        ("ppo_clip", "recompute", 2, "all"),
        ("sent", "sampling", 2, "all"),
        # its positive control (the grpo_positive arm)
        ("ppo_clip", "sampling", 2, "positive"),
    ],
)
def test_the_fast_step_equals_the_plain_algorithm(
    tiny_toy, curriculum, tmp_path, loss, old_logprobs, ppo_epochs, train_samples
):
    # groups without signal left out (rows skipped in the backward), two micro-batches per
    # mini-batch (SENT selects per micro-batch), two optimizer steps per rollout and epoch
    cfg = cfg_for(
        tiny_toy,
        f"training.loss={loss}",
        f"training.old_logprobs={old_logprobs}",
        f"training.ppo_epochs={ppo_epochs}",
        f"training.train_samples={train_samples}",
        "training.filter_groups=true",
        "training.micro_batch_size=8",
        "training.mini_batch_size=4",
        "training.train_batch_size=8",
        "training.policy_loss.kl_cov_ratio=0.05",
    )
    expected, expected_weights = plain_grpo_steps(cfg, curriculum, 3)
    result = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=3, progress=False)
    assert any(0 < m["groups_with_signal"] < 1 for m in result.history)  # some rows were skipped
    for step, (want, got) in enumerate(zip(expected, result.history, strict=True)):
        for key, value in want.items():
            key = "clip_fraction" if key == "pg_clipfrac" else key  # the engine's name for it
            # float rounding only: sampled vs recomputed old log-probabilities (<= 1e-4 per token,
            # tests/sampling/test_sampling.py), and forwards over fewer rows
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)
    got_weights = weights(result.final_dir)
    for name, value in expected_weights.items():
        torch.testing.assert_close(got_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_positive_samples_are_the_right_answers_of_mixed_groups():
    from sent.advantages import grpo_advantages
    from sent.engines.rollout import positive_samples

    # group 0: two right of four (advantage +-0.87); group 1: all right (0: no signal); group 2: one right
    rewards = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0])
    adv = grpo_advantages(rewards, torch.arange(3).repeat_interleave(4))
    assert positive_samples(adv).tolist() == [True, False, False, True] + [False] * 4 + [False, False, False, True]


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

    def strip(history):
        return [json_safe({k: v for k, v in m.items() if not is_timing(k)}) for m in history]

    assert strip(resumed.history) == strip(clean.history)
    a, b = weights(clean.final_dir), weights(resumed.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _crash_after(cfg, curriculum, run_dir, step, max_steps=6):
    class Crash(Exception):
        pass

    def crash(at, _metrics):
        if at == step:
            raise Crash

    with pytest.raises(Crash):
        train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=run_dir, max_steps=max_steps, callback=crash)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_never_resumed_from(tiny_toy, curriculum, tmp_path):
    """One flipped byte in the newest checkpoint's weights: the stage resumes from the checkpoint
    before it (its steps are recomputed: the same metrics as an uninterrupted run); with no intact
    checkpoint left, it is refused with the file named."""
    cfg = cfg_for(tiny_toy)
    clean = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "clean", max_steps=6)
    _crash_after(cfg, curriculum, tmp_path / "crash", step=5)  # checkpoints at steps 2 and 4
    checkpoints = tmp_path / "crash" / "stage-1" / "checkpoints"
    _flip_a_byte(checkpoints / "step-000004" / "model.safetensors")
    resumed = train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "crash", max_steps=6)
    drop = lambda h: [{k: v for k, v in m.items() if not is_timing(k)} for m in h]  # noqa: E731
    assert drop(resumed.history) == drop(clean.history)

    _crash_after(cfg, curriculum, tmp_path / "twice", step=3)  # one checkpoint, at step 2
    _flip_a_byte(tmp_path / "twice" / "stage-1" / "checkpoints" / "step-000002" / "state.pt")
    with pytest.raises(TrainingError, match=r"no intact checkpoint .*step-000002/state.pt is not the file"):
        train_stage(cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "twice", max_steps=6)


def test_a_checkpoint_made_with_other_settings_is_refused(tiny_toy, curriculum, tmp_path):
    cfg = cfg_for(tiny_toy)
    _crash_after(cfg, curriculum, tmp_path, step=3)
    for override, named in (
        ("training.lr=5e-4", "training.lr: 0.0001 -> 0.0005"),
        ("training.loss=ppo_clip", "training.loss: 'sent' -> 'ppo_clip'"),
    ):
        with pytest.raises(TrainingError, match=rf"other settings \(.*{re.escape(named)}.*--fresh"):
            train_stage(cfg_for(tiny_toy, override), stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=6)
    # where checkpoints go and how often is no setting of the result: it resumes
    resumed = train_stage(
        cfg_for(tiny_toy, "training.save_every=3"), stage=1, curriculum_dir=curriculum, run_dir=tmp_path, max_steps=6
    )
    assert resumed.steps == 6


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["static", "online"])
def test_kill_9_then_rerun_continues_with_the_same_metrics(tiny_toy, curriculum, tmp_path, mode):
    """Online: killed after a checkpoint taken once epoch 2 was ordered by online SE; the rerun
    gives the same order and the same per-problem history as well."""
    epoch = len(_stage_rows(curriculum)) // 8 + 1  # steps until epoch 2 is decided, at most
    kill_after = 2 if mode == "static" else 2 * (epoch // 2 + 1)
    args = [
        "--config",
        str(ROOT / "configs" / "toy.yaml"),
        "--stage",
        "1",
        "--curriculum",
        str(curriculum),
        "--max-steps",
        str(kill_after + 2),
        f"model.path={tiny_toy.model_dir}",
        *SMALL,
        f"curriculum.mode={mode}",
    ]
    cmd = [sys.executable, "-m", "sent.cli", "train"]
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "clean")], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = tmp_path / "killed" / "stage-1" / "checkpoints" / f"step-{kill_after:06d}" / "state.pt"
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
    if mode == "online":
        import pyarrow.parquet as pq

        from sent.online_se import HISTORY_FILE

        killed, clean = (pq.read_table(tmp_path / run / "stage-1" / HISTORY_FILE) for run in ("killed", "clean"))
        assert killed.num_rows == (kill_after + 2) * 8 and killed.equals(clean)
        assert max(killed.column("epoch").to_pylist()) >= 2


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
    from sent.engines.step_metrics import EntropyWatch

    watch = EntropyWatch(0.5)
    seen = [watch.update(h) for h in entropies]
    assert [c for c, _ in seen] == collapsed
    assert sum(first for _, first in seen) == (1 if any(collapsed) else 0)  # warned once


# ---------------------------------------------------------------- curriculum.mode: online


def _online_run(tiny_toy, curriculum, run_dir, *, steps, callback=None):
    cfg = cfg_for(tiny_toy, "curriculum.mode=online")
    return train_stage(
        cfg, stage=1, curriculum_dir=curriculum, run_dir=run_dir, max_steps=steps, callback=callback, progress=False
    )


def _stage_rows(curriculum):
    from sent.data_contract import load_curriculum

    return load_curriculum(curriculum, 1).to_pylist()


def test_online_mode_orders_each_later_epoch_by_the_rollouts_latest_se(tiny_toy, curriculum, tmp_path):
    import pyarrow.parquet as pq

    from sent.engines.local import _batch_order
    from sent.online_se import HISTORY_FILE, HISTORY_SCHEMA

    rows = _stage_rows(curriculum)
    n, batch = len(rows), 8
    steps = 2 * n // batch + 1  # into a third epoch: two epochs decided by online SE
    result = _online_run(tiny_toy, curriculum, tmp_path, steps=steps)
    history = pq.read_table(tmp_path / "stage-1" / HISTORY_FILE)
    assert history.schema.equals(HISTORY_SCHEMA)
    h = history.to_pylist()
    assert len(h) == steps * batch  # one row per problem per step
    assert [r["step"] for r in h] == [s for s in range(1, steps + 1) for _ in range(batch)]
    assert all(r["id"] == rows[r["row"]]["extra_info"]["id"] for r in h)
    # epoch 1 is the static order: the same rows as a static stage's first epoch
    static, _ = _batch_order(n, cfg_for(tiny_toy))
    assert [r["row"] for r in h if r["epoch"] == 1] == static[:n].tolist()
    # each later epoch: at the step that first reached into it, its rows sorted by their latest SE
    # (the online SE of the row's last rollout before that step, else the curation's SE)
    for epoch in (2, 3):
        placed = [r for r in h if r["epoch"] == epoch]
        decided_at = placed[0]["step"]
        latest = {i: row["extra_info"]["semantic_entropy"] for i, row in enumerate(rows)}
        for r in h:
            if r["step"] < decided_at:
                latest[r["row"]] = r["semantic_entropy"]
        keys = [latest[r["row"]] for r in placed]
        assert keys == sorted(keys), f"epoch {epoch} is not low SE first"
        if epoch == 2:
            assert len(placed) == n and {r["row"] for r in placed} == set(range(n))
    # the per-step metrics are the history's, step by step
    for s, m in enumerate(result.history, start=1):
        ses = [r["semantic_entropy"] for r in h if r["step"] == s]
        assert m["online_se_mean"] == pytest.approx(sum(ses) / len(ses))
        assert m["online_se_zero"] == pytest.approx(sum(x == 0 for x in ses) / len(ses))
        assert m["epoch"] == max(r["epoch"] for r in h if r["step"] == s)
    assert all(0 <= r["semantic_entropy"] <= math.log(4) + 1e-12 for r in h)  # G = 4 answers


def test_online_mode_resumes_with_the_same_order_and_history(tiny_toy, curriculum, tmp_path):
    import pyarrow.parquet as pq

    from sent.online_se import HISTORY_FILE

    n = len(_stage_rows(curriculum))
    steps = n // 8 + 3  # checkpoints every 2 steps; the crash comes after epoch 2 was decided
    clean = _online_run(tiny_toy, curriculum, tmp_path / "clean", steps=steps)

    class Crash(Exception):
        pass

    def crash(at, _metrics):
        if at == steps - 1:
            raise Crash

    with pytest.raises(Crash):
        _online_run(tiny_toy, curriculum, tmp_path / "crash", steps=steps, callback=crash)
    resumed = _online_run(tiny_toy, curriculum, tmp_path / "crash", steps=steps)
    strip = lambda hist: [{k: v for k, v in m.items() if not is_timing(k)} for m in hist]  # noqa: E731
    assert strip(resumed.history) == strip(clean.history)
    a, b = (pq.read_table(tmp_path / run / "stage-1" / HISTORY_FILE) for run in ("clean", "crash"))
    assert a.equals(b)
    # a static checkpoint is not an online one: resuming across modes is refused
    _crash_after(cfg_for(tiny_toy), curriculum, tmp_path / "static", step=3)
    with pytest.raises(TrainingError, match=r"other settings .*online_order"):
        _online_run(tiny_toy, curriculum, tmp_path / "static", steps=6)
