"""The verl engine on CPU with the real verl package: the Hydra overrides composed with verl's own
ppo_trainer config and converted to verl's dataclasses, the exact-entropy wiring through verl's real
ppo_loss, our reward function called as verl's reward manager calls it, our shards read by verl's
RLHFDataset, the merge command, and the job launcher, in the main environment and in seconds. The
jobs themselves run on verl's real trainer on CPU in tests/engines/test_verl_real.py (.venv-verl), and on
GPUs in scripts/gpu_smoke.sh."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from sent_testing import ROOT, toy_config

pytest.importorskip("verl", reason="needs the verl package")

# _base.yaml is a partial, loaded only through the presets' extends:
PRESETS = sorted(p for p in (ROOT / "configs" / "paper").glob("*.yaml") if not p.name.startswith("_"))


def overrides_dict(overrides: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+").split("=", 1) for o in overrides)


def test_the_gradient_clip_reaches_verls_optimizer(tmp_path):
    """verl 0.9 clips with actor.optim.clip_grad; actor.grad_clip alone never reached it (the presets'
    1.0 equals verl's default, so only another value shows it)."""
    from sent.config_loading import load_config
    from sent.engines.verl import check_verl_config, compose_verl_config, plan_stage

    cfg = load_config(PRESETS[0], ["training.grad_clip=0.25"])
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="m")
    assert check_verl_config(compose_verl_config(plan.overrides))["actor"].optim.clip_grad == 0.25


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_paper_presets_compose_into_verls_config_and_dataclasses(preset, tmp_path):
    from sent.config_loading import load_config
    from sent.engines.verl import check_verl_config, compose_verl_config, plan_stage
    from sent.engines.verl_plugin import SentPolicyLossConfig

    cfg = load_config(preset)
    plan = plan_stage(
        cfg,
        stage=2,
        curriculum_dir=tmp_path / "curate",
        run_dir=tmp_path / "run",
        start_model=str(tmp_path / "run" / "stage-1" / "final"),
        mlflow=("sqlite:////abs/mlflow.db", "0123abcd"),
    )
    composed = compose_verl_config(plan.overrides)
    verl = check_verl_config(composed)
    t, pl = cfg.training, cfg.training.policy_loss
    actor = verl["actor"]
    # SENT's coefficients are real fields of our PolicyLossConfig subclass, built by verl itself
    assert type(actor.policy_loss) is SentPolicyLossConfig and actor.policy_loss.loss_mode == "sent"
    assert (actor.policy_loss.low_entropy_fraction, actor.policy_loss.high_cov_coef) == (
        pl.low_entropy_fraction,
        pl.high_cov_coef,
    )
    assert (actor.policy_loss.low_cov_coef, actor.policy_loss.kl_cov_ratio, actor.policy_loss.ppo_kl_coef) == (
        pl.low_cov_coef,
        pl.kl_cov_ratio,
        pl.ppo_kl_coef,
    )
    assert actor.policy_loss.entropy_source == "exact" and actor.calculate_entropy is True
    # the gradient clip reaches the optimizer config that verl's engine reads (optim.clip_grad)
    assert actor.optim.clip_grad == t.grad_clip
    assert actor.optim.lr == t.lr and actor.ppo_mini_batch_size * t.group_size == t.mini_batch_size * t.group_size
    assert actor.use_kl_loss is (t.ref_kl_coef > 0) and actor.kl_loss_coef == t.ref_kl_coef
    assert verl["algorithm"].adv_estimator == "grpo"
    assert verl["rollout"].n == t.group_size and verl["rollout"].tensor_model_parallel_size == t.verl.rollout_tp
    assert composed.data.max_response_length == t.max_response_tokens
    assert composed.actor_rollout_ref.model.path == str(tmp_path / "run" / "stage-1" / "final")
    assert composed.actor_rollout_ref.model.external_lib == "sent.engines.verl_plugin"
    # the stage's shard paths (not curated yet: the first shard it will read), an explicit list
    assert list(composed.data.train_files) == [str((tmp_path / "curate" / "stage-2" / "part-00000.parquet").resolve())]
    assert composed.reward.custom_reward_function.name == "compute_score"
    assert Path(composed.reward.custom_reward_function.path) == ROOT / "sent" / "rewards.py"
    assert dict(composed.reward.custom_reward_function.reward_kwargs) == {
        "correct_score": t.correct_score,
        "incorrect_score": t.incorrect_score,
        "timeout": t.reward_timeout_s,  # the grading budget of one response
    }
    assert list(composed.trainer.logger) == ["console", "mlflow"]
    assert composed.trainer.resume_mode == "auto" and composed.trainer.experiment_name == "run-stage-2"
    assert composed.trainer.default_local_dir == str((tmp_path / "run" / "stage-2" / "verl" / "checkpoints").resolve())
    env = dict(composed.ray_kwargs.ray_init.runtime_env.env_vars)
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////abs/mlflow.db" and env["MLFLOW_RUN_ID"] == "0123abcd"
    assert (composed.trainer.nnodes, composed.trainer.n_gpus_per_node) == (t.verl.nnodes, t.verl.n_gpus_per_node)


def test_a_value_verl_rejects_is_caught_by_composition(tmp_path):
    from hydra.errors import ConfigCompositionException

    from sent.config_loading import load_config
    from sent.engines.verl import compose_verl_config, plan_stage

    cfg = load_config(PRESETS[0], ["training.verl.extra_overrides=[actor_rollout_ref.actor.no_such_key=1]"])
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path, run_dir=tmp_path / "r", start_model="m")
    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_verl_config(plan.overrides)


def test_a_curated_stage_passes_its_shards_and_step_count(curriculum, tmp_path):
    from sent.data_contract import load_manifest, stage_files
    from sent.engines.verl import check_verl_config, compose_verl_config, plan_stage

    cfg, out = curriculum
    plan = plan_stage(cfg, stage=1, curriculum_dir=out, run_dir=tmp_path / "run", start_model=cfg.model.path)
    manifest = load_manifest(out)
    shards = [str(p.resolve()) for p in stage_files(out, 1, manifest)]
    assert len(shards) >= 2 and plan.curated
    composed = compose_verl_config(plan.overrides)
    check_verl_config(composed)
    assert list(composed.data.train_files) == shards
    rows = manifest["curriculum"]["stages"][0]["count"]
    # floor(epochs_per_stage * rows / train_batch_size), at least 1 (as the local engine counts)
    expected = max(1, int(cfg.training.epochs_per_stage * rows // cfg.training.train_batch_size))
    assert composed.trainer.total_training_steps == plan.total_steps == expected


def test_verl_gets_enough_epochs_for_the_stages_steps_despite_dropping_partial_batches(tiny_toy, curriculum, tmp_path):
    """24 rows, 5 a step, 2 epochs: floor(2 x 24 / 5) = 9 steps, as the local engine counts them.
    verl's dataloader drops each epoch's partial batch (4 rows), so an epoch is 24 // 5 = 4 steps,
    and the 9 steps need ceil(9 / 4) = 3 of its epochs, not ceil(2) = 2 (which would end at 8)."""
    from sent.engines.verl import compose_verl_config, plan_stage

    _, out = curriculum
    cfg = toy_config(
        tiny_toy, "training.train_batch_size=5", "training.mini_batch_size=5", "training.epochs_per_stage=2"
    )
    plan = plan_stage(cfg, stage=1, curriculum_dir=out, run_dir=tmp_path / "run", start_model=cfg.model.path)
    assert plan.rows == 24
    composed = compose_verl_config(plan.overrides)
    assert (composed.trainer.total_training_steps, composed.trainer.total_epochs) == (9, 3)


def test_verls_rlhf_dataset_reads_our_shards_with_the_toy_tokenizer(curriculum, tiny_toy, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from sent.data_contract import stage_files
    from sent.engines.verl import compose_verl_config, plan_stage
    from sent.models import load_tokenizer

    cfg, out = curriculum
    plan = plan_stage(cfg, stage=1, curriculum_dir=out, run_dir=tmp_path / "run", start_model=cfg.model.path)
    composed = compose_verl_config([*plan.overrides, "data.dataloader_num_workers=0"])
    tokenizer = load_tokenizer(tiny_toy.model_dir)
    files = [str(f) for f in stage_files(out, 1)]
    dataset = RLHFDataset(data_files=files, tokenizer=tokenizer, config=composed.data)
    import pyarrow.parquet as pq

    first = pq.read_table(files[0]).slice(0, 1).to_pylist()[0]
    assert len(dataset) == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    item = dataset[0]
    # verl 0.9 hands the chat messages on (its agent loop tokenizes them); its overlong-prompt filter
    # already ran them through the toy tokenizer's chat template and kept all 24
    assert [dict(m) for m in item["raw_prompt"]] == first["prompt"]
    ids = tokenizer.apply_chat_template(list(item["raw_prompt"]), add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert 0 < len(ids) <= composed.data.max_prompt_length
    assert item["data_source"] == first["data_source"] == "toy"
    assert item["reward_model"]["ground_truth"] == first["reward_model"]["ground_truth"]


def test_our_reward_function_as_verls_reward_manager_calls_it(tmp_path):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from sent.config_loading import load_config
    from sent.engines.verl import compose_verl_config, plan_stage

    cfg = load_config(PRESETS[0])
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path, run_dir=tmp_path / "r", start_model="m")
    composed = compose_verl_config(plan.overrides)
    fn = get_custom_reward_fn(OmegaConf.create({"reward": OmegaConf.to_container(composed.reward)}))
    cases = [
        ("The sum is \\boxed{\\frac{1}{2}}.", "0.5", 1.0),
        ("So x = \\boxed{3}", "4", -1.0),
        ("no final answer", "7", -1.0),
        ("\\boxed{(1, 2)}", "(1,2)", 1.0),
    ] * 8

    def call(case):  # the keyword call of verl's reward managers
        solution, truth, _ = case
        return fn(data_source="math_dapo", solution_str=solution, ground_truth=truth, extra_info={"index": 0})

    with ThreadPoolExecutor(max_workers=8) as pool:  # reward managers score from worker threads
        results = list(pool.map(call, cases))
    assert [r["score"] for r in results] == [c[2] for c in cases]
    assert all(set(r) >= {"score", "acc"} for r in results)


def _ppo_loss_inputs(seed: int = 0):
    """verl's ppo_loss inputs for 3 responses: unpadded (flattened) model outputs, padded batch data."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(seed)
    n_prompt, n_resp = 4, 6
    prompt_lens, resp_lens = [4, 3, 4], [6, 4, 5]
    attention = torch.zeros(3, n_prompt + n_resp, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lens, resp_lens, strict=True)):
        attention[i, n_prompt - p : n_prompt] = 1  # left-padded prompt
        attention[i, n_prompt : n_prompt + r] = 1  # right-padded response
    total = int(attention.sum())
    model_output = {"log_probs": -torch.rand(total, generator=g) * 2, "entropy": torch.rand(total, generator=g) * 3}
    data = TensorDict(
        {
            "prompts": torch.ones(3, n_prompt, dtype=torch.long),
            "responses": torch.ones(3, n_resp, dtype=torch.long),
            "attention_mask": attention,
            "response_mask": attention[:, n_prompt:].clone(),
            "old_log_probs": -torch.rand(3, n_resp, generator=g) * 2,
            "advantages": torch.randn(3, 1, generator=g).expand(3, n_resp).contiguous(),
        },
        batch_size=[3],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    return model_output, data


def _actor_config(entropy_source: str, **loss):
    from verl.workers.config.actor import ActorConfig

    from sent.engines.verl_plugin import SentPolicyLossConfig

    policy_loss = SentPolicyLossConfig(
        loss_mode="sent", entropy_source=entropy_source, kl_cov_ratio=0.5, ppo_kl_coef=1.0, **loss
    )
    return ActorConfig(
        strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1, policy_loss=policy_loss
    )


def test_the_exact_entropy_reaches_the_sent_loss_through_verls_ppo_loss():
    import verl.workers.utils.losses as verl_losses
    from verl.workers.utils.padding import no_padding_2_padding

    from sent.engines.verl_plugin import policy_loss_config_from_verl
    from sent.losses import get_policy_loss, metrics_to_floats

    assert verl_losses.ppo_loss.__sent_wrapped__  # installed by `import verl` (the plugin)
    model_output, data = _ppo_loss_inputs()
    config = _actor_config("exact")
    loss, metrics = verl_losses.ppo_loss(config, model_output, data)

    # the same loss computed directly from padded log-probs and the padded exact entropy
    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    entropy = no_padding_2_padding(model_output["entropy"], data)
    mask = data["response_mask"].bool()
    ours = policy_loss_config_from_verl(config, config.loss_agg_mode)
    fn = get_policy_loss("sent")
    kwargs = {
        "log_prob": log_prob,
        "old_log_prob": data["old_log_probs"],
        "advantages": data["advantages"],
        "response_mask": mask,
        "config": ours,
    }
    expected, expected_metrics = fn(entropy=entropy, **kwargs)
    surprisal, _ = fn(entropy=-log_prob, **kwargs)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, surprisal)  # the entropy used is not the surprisal fallback
    expected_floats = metrics_to_floats(expected_metrics)
    got = {k.removeprefix("actor/"): v for k, v in metrics.items() if k.startswith("actor/")}
    assert got["entropy_low_set"].aggregate() == pytest.approx(expected_floats["entropy_low_set"])
    # the loss's own time, summed over micro-batches within a step
    assert metrics["actor/loss_seconds"].aggregation.value == "sum" and 0 < got["loss_seconds"].aggregate() < 10


def test_without_entropy_exact_mode_fails_clearly_and_surprisal_mode_falls_back():
    import verl.workers.utils.losses as verl_losses

    model_output, data = _ppo_loss_inputs()
    del model_output["entropy"]  # calculate_entropy=false
    with pytest.raises(ValueError, match=r"set actor_rollout_ref\.actor\.calculate_entropy=true"):
        verl_losses.ppo_loss(_actor_config("exact"), model_output, data)
    loss, _ = verl_losses.ppo_loss(_actor_config("surprisal"), model_output, data)
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_a_fresh_verl_process_has_the_wiring_in_its_engine_workers():
    code = textwrap.dedent(
        """
        import verl
        import verl.workers.engine_workers as workers
        import verl.workers.utils.losses as losses
        print(workers.ppo_loss is losses.ppo_loss, getattr(workers.ppo_loss, "__sent_wrapped__", False))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True True"


def test_the_merge_command_is_what_verls_model_merger_parses(tmp_path):
    from verl.model_merger.base_model_merger import generate_config_from_args, parse_args

    from sent.config_loading import load_config
    from sent.engines.verl import plan_stage
    from sent.engines.verl_run import merge_command

    cfg = load_config(PRESETS[0])
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path, run_dir=tmp_path / "r", start_model="m")
    command = merge_command(plan, 42)
    assert command[:4] == [sys.executable, "-m", "verl.model_merger", "merge"]
    argv, sys.argv = sys.argv, ["verl.model_merger", *command[3:]]
    try:
        config = generate_config_from_args(parse_args())
    finally:
        sys.argv = argv
    assert config.backend == "fsdp"
    assert config.local_dir == str(plan.checkpoint_dir / "global_step_42" / "actor")
    assert config.target_dir == str(plan.merged_dir)


def test_the_launcher_streams_the_log_and_fails_with_its_tail(caplog):
    import logging

    from sent.engines.verl import VerlEngineError
    from sent.engines.verl_run import parse_step_metrics, stream

    lines = []
    script = "import sys\nfor i in range(300): print(f'line {i}')\n"
    script += "print('step:3 - actor/pg_loss:0.25 - x:nan')\nsys.exit(3)"
    with caplog.at_level(logging.INFO), pytest.raises(VerlEngineError) as err:
        stream([sys.executable, "-c", script], {}, "job", on_line=lines.append)
    assert "job exited with status 3" in str(err.value)
    assert "line 299" in str(err.value) and "line 50\n" not in str(err.value)  # the tail, not everything
    assert len(lines) == 301 and "[job] line 0" in caplog.text
    step, metrics = parse_step_metrics(lines[-1])
    assert step == 3 and metrics["actor/pg_loss"] == 0.25


def test_what_a_job_leaves_in_its_session_ends_with_it(tmp_path):
    """The job starts a child in a process group of its own (as vLLM's engine core is) and exits:
    the child would outlive it, and is ended when the job ends, normally or not."""
    import os

    from sent.engines.verl import VerlEngineError
    from sent.engines.verl_run import stream

    for code in (0, 3):
        pid_file = tmp_path / f"child-{code}"
        child = "import os, time; os.setpgrp(); time.sleep(120)"
        script = (
            "import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {child!r}],\n"
            "    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"  # not our pipe: the job's end ends the log
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            f"sys.exit({code})"
        )
        with contextlib.suppress(VerlEngineError):
            stream([sys.executable, "-c", script], {}, "job")
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            for _ in range(50):  # SIGKILLed: gone once init has reaped it
                os.kill(pid, 0)
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    raise ProcessLookupError
                time.sleep(0.1)


def test_the_tracking_credentials_reach_the_job_by_its_environment_only(tmp_path, caplog):
    """The verl job tracks into the stage's MLflow run. With a URI that carries a password, the
    command line, command.sh, the Hydra config verl saves and prints, and the job's log hold the
    URI without it; the password travels in MLFLOW_TRACKING_PASSWORD of the job's process alone."""
    import logging

    from sent.config_loading import load_config
    from sent.engines.verl import compose_verl_config, plan_stage
    from sent.engines.verl_run import stream

    cfg = load_config(ROOT / "configs" / "toy.yaml", ["training.engine=verl", "training.verl.device=cpu"])
    plan = plan_stage(
        cfg, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="data/models/toy",
        mlflow=("http://alice:s3cr%40t@127.0.0.1:5000", "0123abcd"),
    )  # fmt: skip
    assert "s3cr" not in " ".join(plan.command) + plan.shell() + repr(plan)
    env = dict(compose_verl_config(plan.overrides).ray_kwargs.ray_init.runtime_env.env_vars)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and "MLFLOW_TRACKING_PASSWORD" not in env
    assert plan.secret_env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cr@t"}
    lines: list[str] = []
    script = "import os; print(os.environ['MLFLOW_TRACKING_PASSWORD'] == 's3cr@t', 'http://bob:pw@h/x')"
    with caplog.at_level(logging.INFO):
        stream([sys.executable, "-c", script], plan.secret_env, "job", on_line=lines.append)
    assert lines == ["True http://***@h/x"] and "pw@" not in caplog.text


def test_a_stop_ends_the_job_once_it_has_written_a_checkpoint(tmp_path):
    """A stand-in for a verl job (verl itself runs under the verl marker): it prints a line a
    second and marks checkpoints 1, 2, 3 the way verl does. SIGTERM arrives after checkpoint 1:
    the job runs on to checkpoint 2, then it and its process group are ended and `Interrupted`
    raised (a rerun resumes from 2); it never reaches 3."""
    import signal
    import time

    from sent import interrupt
    from sent.engines.verl_run import StopAtCheckpoint, stream

    marker = tmp_path / "latest_checkpointed_iteration.txt"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        for step in range(1, 4):
            time.sleep(1.5)
            pathlib.Path({str(marker)!r}).write_text(str(step))
            print(f"step:{{step}} - x:1", flush=True)
        time.sleep(30)
        """
    )
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line.startswith("step:1 "):
            signal.raise_signal(signal.SIGTERM)

    t0 = time.monotonic()
    with interrupt.handle_signals(), pytest.raises(interrupt.Interrupted, match="wrote a checkpoint"):
        stream([sys.executable, "-c", script], {}, "job", on_line, stop_when=StopAtCheckpoint(tmp_path))
    assert marker.read_text() == "2" and lines[0] == "step:1 - x:1" and "step:3 - x:1" not in lines
    assert time.monotonic() - t0 < 15  # not the job's 30 s of silence after its last step


def test_dry_run_prints_the_command_and_the_resolved_config(capsys):
    from sent.cli import main

    assert main(["train", "--config", str(PRESETS[0]), "--stage", "2", "--engine", "verl", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-m verl.trainer.main_ppo" in out and "actor_rollout_ref.actor.policy_loss.loss_mode=sent" in out
    assert "(not curated yet: the stage will read" in out and "stage 1 not trained yet" in out
    assert "_target_: sent.engines.verl_plugin.SentPolicyLossConfig" in out  # the resolved config follows


def test_a_stage_smaller_than_one_batch_is_refused_before_verl_starts(curriculum, tmp_path):
    # verl's dataloader drops the last partial batch: such a stage has no step, and verl's fit
    # died with ZeroDivisionError after minutes of start-up. Refused at once, with what to change.
    import dataclasses

    from sent.engines.verl import VerlEngineError, plan_stage
    from sent.engines.verl_run import run_stage

    cfg, out = curriculum
    plan = plan_stage(cfg, stage=1, curriculum_dir=out, run_dir=tmp_path / "run", start_model=cfg.model.path)
    small = dataclasses.replace(plan, batch_size=plan.rows + 1)
    with pytest.raises(VerlEngineError, match=rf"stage 1 has {plan.rows} problems, fewer than .*train_batch_size="):
        run_stage(small, cfg)
    assert not (tmp_path / "run").exists()  # nothing started


def test_the_step_history_keeps_a_killed_jobs_steps_and_the_resumed_runs_of_the_others(tmp_path):
    # a job killed after step 2's line (checkpoint at 1) and mid-line of step 3; the resumed job
    # repeats step 2 and logs 3: one line per step, the last run of each, in order
    from sent.engines.verl_run import _drop_torn_tail, write_step_history

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1.0, "x": 1}\n{"step": 2.0, "x": 2}\n{"step": 3.0, "x"')
    _drop_torn_tail(path)
    with path.open("a") as f:
        f.write('{"step": 2.0, "x": 20}\n{"step": 3.0, "x": 30}\n')
    assert write_step_history(path) == [{"step": 1.0, "x": 1}, {"step": 2.0, "x": 20}, {"step": 3.0, "x": 30}]
    assert path.read_text().count("\n") == 3
