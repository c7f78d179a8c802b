"""``curriculum.mode: online`` on verl, in the main environment and in seconds: our dataset class
(`sent.engines.verl_online`) as verl's trainer builds and drives it, with verl's real parts (the
composed config, `RLHFDataset` under it, `create_rl_sampler`, torchdata's `StatefulDataLoader`,
verl's collate function, its dataloader checkpoint and its rule of not restoring it at an epoch's
end) and our real reward function called as verl's reward loop calls it. Only the policy is
missing: each row's G responses are written here, so that their SEs are known. verl's whole
trainer runs an online stage in tests/engines/test_verl_real.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sent_testing import toy_config

pytest.importorskip("verl", reason="needs the verl package")

GROUP = 3
BATCH = 5  # 24 rows: verl drops 4 at each epoch end, the stream does not


def _responses(problem_id: str, step: int) -> list[str]:
    """G responses whose number of distinct answers (1 to G) moves with the problem and the step,
    so that the online SE differs between rows and between epochs."""
    distinct = (sum(map(ord, problem_id)) + step) % GROUP + 1
    return [f"so the answer is \\boxed{{{k % distinct}}}" for k in range(GROUP)]


@dataclass
class Run:
    """What a (simulated) verl job did: each step's rows, and what the reward function saw."""

    rows: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # step -> [(id, epoch)]
    answers: dict[tuple[int, str], list[str]] = field(default_factory=dict)


def _plan(tiny_toy, curriculum, run_dir: Path):
    """The verl plan of the curriculum's one stage in online mode: 5 rows a step, G = 3, 2 epochs."""
    from sent.engines.verl import compose_verl_config, plan_stage

    cfg = toy_config(
        tiny_toy,
        "curriculum.n_stages=1",
        "curriculum.mode=online",
        "training.engine=verl",
        f"training.train_batch_size={BATCH}",
        f"training.mini_batch_size={BATCH}",
        f"training.group_size={GROUP}",
        "training.epochs_per_stage=2",
    )
    plan = plan_stage(cfg, stage=1, curriculum_dir=curriculum[1], run_dir=run_dir, start_model=cfg.model.path)
    return plan, compose_verl_config(plan.overrides)


def _batches(loader, global_steps: int, total_epochs: int, trainer: str) -> Iterator[dict]:
    """The batches verl's training loop takes from its dataloader, resumed at ``global_steps``.
    The legacy trainer loops over epochs, after restoring the dataloader only within an epoch;
    V1 (the default) restores it always and fetches again when an epoch's iterator runs out."""
    if trainer == "v0":
        for _epoch in range(global_steps // len(loader), total_epochs):
            yield from loader
        return
    it = iter(loader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            it = iter(loader)


def _job(plan, composed, tokenizer, run: Run, *, trainer: str = "v1", stop_after: int | None = None) -> None:
    """verl 0.9.1's trainer around its dataloader (``_init_dataloader``, ``_load_checkpoint``,
    ``fit``, ``_save_checkpoint``, the legacy ``on_batch_end``), with our reward function as its
    reward loop calls it. ``stop_after``: the job dies right after that step's checkpoint, with the
    next step's rollouts half recorded."""
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    from sent import online_record
    from sent.rewards import compute_score

    dataset = create_rl_dataset(composed.data.train_files, composed.data, tokenizer, None)
    loader = StatefulDataLoader(
        dataset,
        batch_size=composed.data.train_batch_size,
        num_workers=composed.data.dataloader_num_workers,
        drop_last=True,
        collate_fn=collate_fn,
        sampler=create_rl_sampler(composed.data, dataset),
    )
    checkpoints = plan.checkpoint_dir
    marker = checkpoints / "latest_checkpointed_iteration.txt"
    global_steps = int(marker.read_text()) if marker.is_file() else 0
    if global_steps and (trainer == "v1" or global_steps % len(loader)):  # v0: not at an epoch's end
        loader.load_state_dict(torch.load(checkpoints / f"global_step_{global_steps}" / "data.pt", weights_only=False))
    total = composed.trainer.total_training_steps
    step = global_steps + 1
    for batch in _batches(loader, global_steps, composed.trainer.total_epochs, trainer):
        run.rows[step] = []
        for info, truth in zip(batch["extra_info"], batch["reward_model"], strict=True):
            run.rows[step].append((info["id"], info[online_record.KEY]["epoch"]))
            run.answers[(step, info["id"])] = _responses(info["id"], step)
            for response in _responses(info["id"], step):
                compute_score("toy", response, truth["ground_truth"], dict(info))
        folder = checkpoints / f"global_step_{step}"
        folder.mkdir(parents=True)
        torch.save(loader.state_dict(), folder / "data.pt")
        marker.write_text(str(step))
        if step == total:
            return
        if step == stop_after:
            late = dataset[step * BATCH % dataset.usable]["extra_info"]  # verl fetches the next step
            compute_score("toy", "\\boxed{0}", "0", dict(late))  # the next step's first row, half graded
            with open(late[online_record.KEY]["record"], "a") as f:
                f.write('{"position": 999, "row"')  # a line cut by the kill
            return
        if trainer == "v0":
            dataset.on_batch_end(batch=None)
        step += 1
    raise AssertionError(f"verl's loop ended at step {step} of {total}")


@pytest.fixture(scope="module")
def tokenizer(tiny_toy):
    from sent.models import load_tokenizer

    return load_tokenizer(tiny_toy.model_dir)


@pytest.fixture(scope="module")
def uninterrupted(tiny_toy, curriculum, tokenizer, tmp_path_factory):
    from sent.engines.verl_run import finish_online

    plan, composed = _plan(tiny_toy, curriculum, tmp_path_factory.mktemp("online") / "run")
    run = Run()
    _job(plan, composed, tokenizer, run)
    metrics = finish_online(plan, composed.trainer.total_training_steps)
    return plan, composed, run, metrics, pq.read_table(plan.online.history)


def test_the_plan_serves_the_stage_through_our_dataset_in_order(uninterrupted):
    from sent.engines.verl import check_verl_config

    plan, composed, run, _, _ = uninterrupted
    check_verl_config(composed)
    assert composed.data.custom_cls.path == "pkg://sent.engines.verl_online"
    assert composed.data.shuffle is False and composed.data.dataloader_num_workers == 0
    rows = plan.rows
    # floor(2 epochs x rows / 5) steps; verl's dataloader drops each epoch's last partial batch
    assert composed.trainer.total_training_steps == math.floor(2 * rows / BATCH) == len(run.rows)
    assert composed.trainer.total_epochs * (rows // BATCH) >= len(run.rows)


def test_each_epoch_after_the_first_is_ordered_by_the_recorded_online_se(uninterrupted):
    plan, _, run, _, history = uninterrupted
    rows = json.loads(Path(plan.online.rows).read_text())
    stream = [(pid, epoch) for s in sorted(run.rows) for pid, epoch in run.rows[s]]
    assert sorted(pid for pid, epoch in stream if epoch == 1) == sorted(rows["ids"])  # each row once
    # The stream runs on across verl's epochs: epoch 2 starts at place `rows`, in step rows // 5 + 1,
    # and was decided there on the steps before it. A row not measured by then has its curation SE.
    decided_after = plan.rows // BATCH
    latest = dict(zip(rows["ids"], rows["offline_se"], strict=True))
    for r in sorted(history.to_pylist(), key=lambda r: r["step"]):
        if r["step"] <= decided_after:
            latest[r["id"]] = r["semantic_entropy"]
    second = [latest[pid] for pid, epoch in stream if epoch == 2]
    assert len(second) >= BATCH and len(set(second)) > 1  # not all tied: the order is a real sort
    assert second == sorted(second)  # low SE first


def test_the_online_se_is_sent_semantic_on_the_answers_the_reward_function_saw(uninterrupted, curriculum):
    from sent.rewards import extract_answer
    from sent.semantic import configured_judge, score_answers

    _, _, run, metrics, history = uninterrupted
    semantic = curriculum[0].semantic
    assert history.num_rows == sum(len(r) for r in run.rows.values())
    for r in history.to_pylist():
        answers = [extract_answer(t) for t in run.answers[(r["step"], r["id"])]]
        expected = score_answers(answers, equivalent=configured_judge(semantic), pool_missing=semantic.pool_missing)
        assert r["semantic_entropy"] == pytest.approx(expected.entropy) and r["n_classes"] == expected.n_classes
        # the ground truth of toy problems is a number; every answer here is 0..2
    last = max(run.rows)  # the last step, which verl's on_batch_end never sees, is there too
    values = [r["semantic_entropy"] for r in history.to_pylist() if r["step"] == last]
    assert metrics[last]["online_se_mean"] == pytest.approx(sum(values) / len(values))


@pytest.mark.parametrize(
    "where, trainer", [("mid-epoch", "v1"), ("epoch-end", "v1"), ("mid-epoch", "v0"), ("epoch-end", "v0")]
)
def test_a_job_killed_after_a_checkpoint_resumes_with_the_same_order_and_history(
    where, trainer, uninterrupted, tiny_toy, curriculum, tokenizer, tmp_path
):
    """Killed after step 3 (inside verl's first epoch: its dataloader state is restored), or after
    its first epoch's last step (the legacy trainer then starts the next epoch afresh, restoring
    nothing; V1 restores an exhausted dataloader, then starts it again)."""
    from sent.engines.verl_run import finish_online

    _, _, run0, metrics0, history0 = uninterrupted
    plan, composed = _plan(tiny_toy, curriculum, tmp_path / "run")
    stop_after = 3 if where == "mid-epoch" else plan.rows // BATCH
    killed, resumed = Run(), Run()
    _job(plan, composed, tokenizer, killed, trainer=trainer, stop_after=stop_after)
    _job(plan, composed, tokenizer, resumed, trainer=trainer)  # a new process: only the files are left
    assert sorted(resumed.rows) == list(range(stop_after + 1, len(run0.rows) + 1))
    assert {**killed.rows, **resumed.rows} == run0.rows
    metrics = finish_online(plan, composed.trainer.total_training_steps)
    assert metrics == metrics0
    assert pq.read_table(plan.online.history).equals(history0)
