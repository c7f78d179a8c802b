"""The ablation flow on the tiny toy world under the real Prefect engine (test harness), with a
real MLflow sqlite store: two arms x two seeds, the shared curation, caching, resume, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sent_testing import pipeline_config, prefect_harness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with prefect_harness(tmp_path_factory.mktemp("prefect-results")):
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_toy, harness):
    root = tmp_path_factory.mktemp("ablation-project")
    raw = pipeline_config(tiny_toy)
    raw["ablation"] = {"arms": {"slow_sent": ["training.loss=sent", "training.lr=1e-5"]}}
    (root / "ablate.yaml").write_text(yaml.safe_dump(raw))
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def run_ablation(**kwargs):
    from flows.ablation import sent_ablation

    state = sent_ablation(config="ablate.yaml", out="data/runs/abl", return_state=True, **kwargs)
    return state.result(), state.state_details.flow_run_id


def train_states(flow_run_id) -> dict[str, str]:
    """Final state names of the flow run's training and evaluation tasks, by task run name, in order."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = [(r.name, r.state.name, r.start_time) for r in runs if r.name.startswith(("train:", "eval"))]
        if all(s not in ("Pending", "Running") for _, s, _ in states) or time.monotonic() > deadline:
            return [(name, state) for name, state, _ in sorted(states, key=lambda x: str(x[2]))]
        time.sleep(0.2)


def test_two_arms_two_seeds_cached_and_resumed(in_project):
    from sent.tracking import Tracker, resolve_tracking_uri

    # 1. one seed: the shared steps, then grpo (one stage of every problem) and sent (two SE stages)
    first, first_id = run_ablation(arms=["grpo", "sent"], seeds=[0])
    out = in_project / "data" / "runs" / "abl"
    assert set(first["arms"]) == {"grpo", "sent"} and not first["missing"]
    grpo0 = out / "runs" / "grpo" / "seed-0"
    sent0 = out / "runs" / "sent" / "seed-0"
    assert (grpo0 / "stage-1" / "final" / "stage.json").is_file() and not (grpo0 / "stage-2").exists()
    assert (sent0 / "stage-2" / "final" / "stage.json").is_file()
    # grpo's one stage is restaged from the same scores: every problem of the two SE stages
    grpo_start = json.loads((grpo0 / "stage-1" / "final" / "stage.json").read_text())["steps"]
    sent_steps = [json.loads((sent0 / f"stage-{k}" / "final" / "stage.json").read_text())["steps"] for k in (1, 2)]
    assert abs(grpo_start - sum(sent_steps)) <= 1
    (curricula,) = (out / "curricula").iterdir()
    assert json.loads((curricula / "manifest.json").read_text())["curriculum"]["n_stages"] == 1
    states = dict(train_states(first_id))
    assert all(v == "Completed" for v in states.values()), states

    # 2. a second seed: only the new runs train; seed 0's come from the cache
    mtime = (sent0 / "stage-2" / "final" / "model.safetensors").stat().st_mtime_ns
    second, second_id = run_ablation(arms=["grpo", "sent"], seeds=[0, 1])
    assert (sent0 / "stage-2" / "final" / "model.safetensors").stat().st_mtime_ns == mtime
    states = train_states(second_id)
    cached = [name for name, state in states if state == "Cached"]
    ran = [name for name, state in states if state == "Completed"]
    assert len(cached) == 1 + 2 + 3  # eval:base; grpo seed 0: train:1, eval; sent seed 0: train:1, train:2, eval
    assert len(ran) == 5  # seed 1: grpo train:1 + eval, sent train:1 + train:2 + eval
    assert second["arms"]["sent"]["seeds"] == [0, 1]
    # the same seed gives the same evaluation from the cache: seed 0's numbers did not move
    assert second["arms"]["sent"]["avg@2"]["per_seed"][0] == first["arms"]["sent"]["avg@2"]["per_seed"][0]
    pair = second["paired"]["sent"]["all"]
    assert pair["problems"] == 12 and pair["ci_low"] <= pair["difference"] <= pair["ci_high"]

    # 3. a run whose evaluation was lost (an interrupted ablation) is redone alone
    (out / "runs" / "grpo" / "seed-1" / "eval-final" / "results.json").unlink()
    third, third_id = run_ablation(arms=["grpo", "sent"], seeds=[0, 1])
    ran = [name for name, state in train_states(third_id) if state == "Completed"]
    assert ran == ["eval"]
    assert third["arms"]["grpo"]["avg@2"] == second["arms"]["grpo"]["avg@2"]

    # the report and the MLflow lineage: a parent per ablation run, a child per arm x seed
    report = (out / "ablation.md").read_text()
    assert "| sent | 2 |" in report and "Paired difference from `grpo`" in report
    assert (out / "entropy_curves.png").stat().st_size > 1000
    tracker = Tracker(resolve_tracking_uri(None, in_project), "sent")
    plan = json.loads((out / "plan.json").read_text())
    children = tracker.children(plan["mlflow"]["run_id"])
    assert sorted(r.info.run_name for r in children) == ["grpo/seed-0", "grpo/seed-1", "sent/seed-0", "sent/seed-1"]
    assert all(r.info.status == "FINISHED" and "eval.avg_at_2" in r.data.metrics for r in children)
    parent = tracker.client.get_run(plan["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["paired.sent.all.difference"] == pytest.approx(
        third["paired"]["sent"]["all"]["difference"]
    )

    # 4. a call with one arm reports that arm only; --report-only reports every run on disk, with
    # the numbers the two-arm flow reported
    fourth, _ = run_ablation(arms=["sent"], seeds=[0, 1], reference="sent")
    assert set(fourth["arms"]) == {"sent"} and fourth["paired"] == {}
    from sent.cli import main

    assert main(["ablate", "--config", "ablate.yaml", "--out", str(out), "--report-only", "--reference", "grpo"]) == 0
    on_disk = json.loads((out / "ablation.json").read_text())
    assert list(on_disk["arms"]) == ["grpo", "sent"]  # in the built-in order, whatever the last call ran
    for arm in ("grpo", "sent"):
        assert on_disk["arms"][arm]["avg@2"]["mean"] == pytest.approx(third["arms"][arm]["avg@2"]["mean"])
        assert on_disk["arms"][arm]["steps"] == third["arms"][arm]["steps"]
    assert on_disk["paired"]["sent"]["all"] == pytest.approx(third["paired"]["sent"]["all"])
    assert sorted(on_disk["runs"]) == ["grpo/seed-0", "grpo/seed-1", "sent/seed-0", "sent/seed-1"]


def test_parallel_runs_give_the_sequential_numbers(in_project):
    """Two arm x seed runs at a time, each in a process of its own (Prefect's ProcessPoolTaskRunner),
    into a new directory: the same numbers as one at a time."""
    from flows.ablation import sent_ablation

    sequential = sent_ablation(config="ablate.yaml", out="data/runs/seq", arms=["grpo", "slow_sent"], seeds=[0])
    parallel = sent_ablation(
        config="ablate.yaml", out="data/runs/par", arms=["grpo", "slow_sent"], seeds=[0], parallel=2
    )
    for arm in ("grpo", "slow_sent"):
        assert parallel["arms"][arm]["avg@2"]["per_seed"] == sequential["arms"][arm]["avg@2"]["per_seed"]
        for key in ("entropy_start", "entropy_final", "entropy_min"):  # the whole run's trajectory, to float noise
            assert parallel["arms"][arm][key]["mean"] == pytest.approx(sequential["arms"][arm][key]["mean"], rel=1e-6)
    assert Path(in_project / "data" / "runs" / "par" / "ablation.md").is_file()


def test_a_second_ablation_on_one_directory_is_refused_before_it_writes(in_project):
    """Another process holds the ablation directory (here: this one, through another open file,
    which flock treats alike): the flow fails at once, naming the holder, and writes no plan."""
    import os

    from flows.ablation import sent_ablation
    from sent.locks import LockedError, exclusive

    out = in_project / "data" / "runs" / "held"
    with exclusive(out, "ablation"):
        state = sent_ablation(config="ablate.yaml", arms=["grpo"], seeds=[0], out=str(out), return_state=True)
        with pytest.raises(LockedError, match=rf"{out} is being written by another ablation \(PID {os.getpid()} "):
            state.result()
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    assert list(out.iterdir()) == []  # and the holder's lock file went with it
