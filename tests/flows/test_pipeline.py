"""The Prefect pipeline end to end on the tiny toy world: the real Prefect engine (test harness),
a real MLflow sqlite store in a temporary project directory, real Parquet and a real model."""

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
    """A project directory (the working directory of the flows) with its config; MLflow defaults to
    sqlite under its data/."""
    root = tmp_path_factory.mktemp("project")
    (root / "pipeline.yaml").write_text(yaml.safe_dump(pipeline_config(tiny_toy)))
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def run_pipeline(**kwargs):
    """The flow's final state and its flow run id."""
    from flows.pipeline import sent_pipeline

    state = sent_pipeline(config="pipeline.yaml", return_state=True, **kwargs)
    return state, state.state_details.flow_run_id


def task_states(flow_run_id, expect: set[str]) -> dict[str, str]:
    """Final state names of a flow run's tasks by task run name (bookkeeping tasks left out). Task run
    states reach the server as events, a moment after the flow returns: poll until ``expect`` is there."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = {r.name: r.state.name for r in runs if r.name not in ("record-step", "base-model")}
        settled = all(states.get(name) not in (None, "Pending", "Running") for name in expect)
        if settled or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def prefect_artifacts(flow_run_id) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def tracker(project: Path):
    from sent.tracking import Tracker

    return Tracker(f"sqlite:///{project / 'data' / 'mlflow.db'}", "sent")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def first_run(project, harness):
    """The whole default pipeline once (bootstrap up to date, curate, 2 stages, 2 evaluations)."""
    import os

    cwd = os.getcwd()
    os.chdir(project)
    try:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        state, flow_run_id = run_pipeline(run_dir="data/runs/first")
    finally:
        os.chdir(cwd)
    assert state.is_completed(), state
    return state.result(), flow_run_id


def test_pipeline_runs_every_step_and_records_lineage(project, first_run):
    record, flow_run_id = first_run
    run_dir = project / "data" / "runs" / "first"
    assert record["status"] == "finished" and record["error"] is None
    assert list(record["artefacts"]) == ["bootstrap", "curate", "train:1", "train:2", "eval:base", "eval"]
    assert record["prefect_flow_run_id"] == str(flow_run_id)
    assert json.loads((run_dir / "run.json").read_text())["artefacts"] == record["artefacts"]
    arts = record["artefacts"]
    # stage 2 started from stage 1's final weights; eval evaluated stage 2; eval:base the start
    stage2 = json.loads((Path(arts["train:2"]["path"]) / "stage.json").read_text())
    assert stage2["start_model"] == arts["train:1"]["path"]
    assert json.loads(Path(arts["eval"]["path"]).read_text())["model"] == arts["train:2"]["path"]
    steps1, steps2 = arts["train:1"]["meta"]["steps"], arts["train:2"]["meta"]["steps"]
    counts = [s["count"] for s in arts["curate"]["meta"]["stages"]]
    assert [steps1, steps2] == [max(1, n // 8) for n in counts]  # 8 prompts per step, 1 epoch
    assert arts["train:2"]["meta"]["global_step_end"] == steps1 + steps2

    t = tracker(project)
    parent = t.client.get_run(record["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["training.loss"] == "sent" and parent.data.params["sampling.n"] == "4"
    assert parent.data.tags["sent.prefect_flow_run_id"] == str(flow_run_id)
    assert parent.data.tags["sent.seed"] == "0" and "sent.version.torch" in parent.data.tags
    assert len(parent.data.tags["sent.git_commit"]) >= 7
    children = {r.info.run_name: r for r in t.children(parent.info.run_id)}
    assert set(children) == {"curate", "train:1", "train:2", "eval:base", "eval"}
    assert all(c.info.status == "FINISHED" for c in children.values())
    assert {s: a["mlflow_run_id"] for s, a in arts.items() if a["mlflow_run_id"]} == {
        n: c.info.run_id for n, c in children.items()
    }


def test_training_curves_in_mlflow_match_the_stage_files(project, first_run):
    record, _ = first_run
    t = tracker(project)
    arts = record["artefacts"]
    offset = 0
    for stage in (1, 2):
        child = arts[f"train:{stage}"]["mlflow_run_id"]
        lines = read_jsonl(Path(arts[f"train:{stage}"]["path"]).parent / "metrics.jsonl")
        for key in ("policy_entropy", "reward_mean", "accuracy"):
            history = sorted(t.client.get_metric_history(child, key), key=lambda m: m.step)
            assert [m.step for m in history] == list(range(1, len(lines) + 1))
            assert [m.value for m in history] == pytest.approx([line[key] for line in lines])
        parent_curve = t.client.get_metric_history(record["mlflow"]["run_id"], "train/policy_entropy")
        on_parent = {m.step: m.value for m in parent_curve}
        # the parent holds the stages end to end: stage 2's step 1 is global step n1 + 1
        for i, line in enumerate(lines, start=1):
            assert on_parent[offset + i] == pytest.approx(line["policy_entropy"])
        offset += len(lines)
    assert len(on_parent) == offset


def test_datasets_artefacts_and_eval_metrics_match_the_files(project, first_run):
    from sent.data_contract import load_manifest, stage_files
    from sent.lineage import digest_of

    record, flow_run_id = first_run
    t = tracker(project)
    arts = record["artefacts"]
    curriculum = Path(arts["curate"]["path"])
    manifest = load_manifest(curriculum)
    train1 = t.client.get_run(arts["train:1"]["mlflow_run_id"])
    (dataset,) = [d.dataset for d in train1.inputs.dataset_inputs]
    files = stage_files(curriculum, 1, manifest)
    shas = [e["sha256"] for e in manifest["files"] if curriculum / e["path"] in files]
    assert dataset.name == "curriculum-stage-1" and dataset.digest == digest_of(*shas)[:36]
    curate_run = t.client.get_run(arts["curate"]["mlflow_run_id"])
    names = sorted(d.dataset.name for d in curate_run.inputs.dataset_inputs)
    assert names == ["curriculum-stage-1", "curriculum-stage-2", Path(manifest["config"]["data"]["train_path"]).name]

    # artefact files in MLflow are byte-identical to the run's files
    local = Path(t.client.download_artifacts(arts["curate"]["mlflow_run_id"], "manifest.json", str(project / "dl")))
    assert local.read_bytes() == (curriculum / "manifest.json").read_bytes()
    results_path = Path(arts["eval"]["path"])
    local = Path(t.client.download_artifacts(arts["eval"]["mlflow_run_id"], "results.json", str(project / "dl")))
    assert local.read_bytes() == results_path.read_bytes()
    results = json.loads(results_path.read_text())
    eval_run = t.client.get_run(arts["eval"]["mlflow_run_id"])
    assert eval_run.data.metrics["mean.avg_at_2"] == pytest.approx(results["mean"]["avg@2"])
    assert eval_run.data.metrics["toy.pass_at_1"] == pytest.approx(results["benchmarks"]["toy"]["pass@1"])
    parent_artifacts = {f.path for f in t.client.list_artifacts(record["mlflow"]["run_id"], "reports")}
    assert {
        "reports/training_curves.png",
        "reports/evaluation_avg_at_2.png",
        "reports/comparison.md",
    } <= parent_artifacts
    # the paired comparison, per level of the toy benchmark, recomputed here from the two details files
    from sent.evaluation import benchmark_levels
    from sent.stats import compare_evaluations, problem_scores

    run_dir = Path(record["run_dir"])
    comparison = json.loads((run_dir / "comparison.json").read_text())
    toy_file = Path(record["resolved_config"]["toy"]["data_dir"]) / "test.jsonl"
    expected = compare_evaluations(
        problem_scores(run_dir / "eval-base" / "details.parquet"),
        problem_scores(run_dir / "eval-final" / "details.parquet"),
        levels={"toy": benchmark_levels(toy_file)},
        trained={f"toy L{lv}" for lv in record["resolved_config"]["toy"]["rl_levels"]},
    )
    assert [r["group"] for r in comparison] == [r.group for r in expected]
    assert comparison[-1]["group"] == "all" and comparison[-2]["group"].startswith("trained: toy L1")
    parent = t.client.get_run(record["mlflow"]["run_id"]).data.metrics
    assert parent["compare.all.difference"] == pytest.approx(expected[-1].difference)
    assert parent["compare.trained.difference"] == pytest.approx(expected[-2].difference)

    prefect = prefect_artifacts(flow_run_id)
    assert {"curriculum-summary", "evaluation", "evaluation-base", "mlflow-run"} <= set(prefect)
    assert record["mlflow"]["run_id"] in prefect["mlflow-run"].data
    rows = prefect["curriculum-summary"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert [r["problems"] for r in rows] == [s["count"] for s in manifest["curriculum"]["stages"]]


def test_a_retried_run_skips_cached_work_and_recomputes_what_was_deleted(in_project, first_run):
    import shutil

    record, _ = first_run
    t = tracker(in_project)
    n_runs = len(t.client.search_runs([t.experiment_id], max_results=1000))
    stage1 = Path(record["artefacts"]["train:1"]["path"])
    mtime = (stage1 / "model.safetensors").stat().st_mtime_ns

    state, flow_run_id = run_pipeline(run_dir="data/runs/first")
    assert state.is_completed()
    expensive = ["bootstrap", "curate", "train:1", "train:2", "eval:base", "eval"]
    states = task_states(flow_run_id, set(expensive))
    assert {states[name] for name in expensive} == {"Cached"}
    assert (stage1 / "model.safetensors").stat().st_mtime_ns == mtime
    # one new parent run, no new child run (a cached task body never ran)
    assert len(t.client.search_runs([t.experiment_id], max_results=1000)) == n_runs + 1

    # a cached result whose files are gone is not trusted: the evaluation runs again
    shutil.rmtree(in_project / "data" / "runs" / "first" / "eval-final")
    state, flow_run_id = run_pipeline(run_dir="data/runs/first", steps=["eval"])
    assert state.is_completed()
    assert task_states(flow_run_id, {"eval"})["eval"] == "Completed"
    assert (in_project / "data" / "runs" / "first" / "eval-final" / "results.json").is_file()


def test_a_failed_stage_fails_the_flow_and_a_rerun_of_that_stage_alone_succeeds(in_project, first_run):
    record, _ = first_run
    curriculum = Path(record["artefacts"]["curate"]["path"])
    shard = sorted((curriculum / "stage-2").glob("part-*.parquet"))[0]
    original = shard.read_bytes()
    shard.write_bytes(original[:-8] + b"corrupt!")  # same size, another sha256
    try:
        state, flow_run_id = run_pipeline(
            run_dir="data/runs/failing", reuse="data/runs/first", steps=["train:1", "train:2"]
        )
    finally:
        failed_record = json.loads((in_project / "data" / "runs" / "failing" / "run.json").read_text())
        shard.write_bytes(original)
    assert state.is_failed()
    message = str(state.message) + str(failed_record["error"])
    assert "stage-2/part-00000.parquet does not match its sha256" in failed_record["error"], message
    states = task_states(flow_run_id, {"train:1", "train:2"})
    assert states["train:1"] == "Completed" and states["train:2"] == "Failed"
    t = tracker(in_project)
    parent = t.client.get_run(failed_record["mlflow"]["run_id"])
    assert parent.info.status == "FAILED"
    failed_child = [c for c in t.children(parent.info.run_id) if c.info.run_name == "train:2"]
    assert [c.info.status for c in failed_child] == ["FAILED"]
    assert "does not match its sha256" in failed_child[0].data.tags["sent.error"]

    # the shard restored, train:2 alone in the same run: nothing upstream runs again
    state, flow_run_id = run_pipeline(run_dir="data/runs/failing", steps=["train:2"])
    assert state.is_completed()
    expected = {"open-run": "Completed", "train:2": "Completed", "close-run": "Completed"}
    assert task_states(flow_run_id, set(expected)) == expected
    rerun = json.loads((in_project / "data" / "runs" / "failing" / "run.json").read_text())
    assert rerun["status"] == "finished"
    assert (
        json.loads((Path(rerun["artefacts"]["train:2"]["path"]) / "stage.json").read_text())["start_model"]
        == (rerun["artefacts"]["train:1"]["path"])
    )
    assert rerun["artefacts"]["train:1"]["path"].endswith("failing/stage-1/final")


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        (["train:2"], "train:2 needs a curriculum: add the curate step, or reuse a run that has one"),
        (["curate", "train:2"], "train:2 starts from stage 1's weights: add train:1, or reuse a run that trained it"),
        (["curate", "eval"], "eval evaluates the last trained stage: add a train step, or reuse a run that trained"),
        (["train:3"], "train:3: the curriculum has stages 1..2 (curriculum.n_stages)"),
        (["train"], "unknown steps ['train']"),
        (["rescore:1"], "rescore:1 re-stages the curriculum: it needs curriculum.mode=rescored"),
    ],
)
def test_steps_that_lack_an_input_are_refused_before_anything_runs(in_project, first_run, steps, error):
    state, flow_run_id = run_pipeline(steps=steps)
    assert state.is_failed()
    assert error in str(state.result(raise_on_failure=False))
    assert task_states(flow_run_id, {"open-run"}) == {"open-run": "Failed"}


def test_rerunning_one_stage_with_reuse_runs_nothing_upstream(in_project, first_run):
    record, _ = first_run
    state, flow_run_id = run_pipeline(reuse="data/runs/first", steps=["train:2"])
    assert state.is_completed()
    expected = {"open-run": "Completed", "train:2": "Completed", "close-run": "Completed"}
    assert task_states(flow_run_id, set(expected)) == expected
    new = state.result()
    assert new["run_dir"] != record["run_dir"] and new["reuse"] == record["run_dir"]
    # the curriculum and stage 1 are the first run's; stage 2 is new and starts from that stage 1
    for step in ("curate", "train:1"):
        assert new["artefacts"][step] == record["artefacts"][step]
    stage2 = Path(new["artefacts"]["train:2"]["path"])
    assert stage2.is_relative_to(new["run_dir"])
    assert json.loads((stage2 / "stage.json").read_text())["start_model"] == record["artefacts"]["train:1"]["path"]
    assert "eval" not in new["artefacts"]  # the reused evaluation was of the old stage 2: outdated
    t = tracker(in_project)
    parent = t.client.get_run(new["mlflow"]["run_id"])
    assert parent.data.tags["sent.reuse"] == record["run_dir"]
    assert [c.info.run_name for c in t.children(parent.info.run_id)] == ["train:2"]


def test_a_rescored_run_restages_between_stages_and_the_step_is_cached_and_tracked(in_project, first_run):
    record, _ = first_run
    kwargs = {
        "reuse": "data/runs/first",
        "steps": ["rescore:1", "train:2"],
        "run_dir": "data/runs/rescored",
        "overrides": ["curriculum.mode=rescored"],
    }
    state, flow_run_id = run_pipeline(**kwargs)
    assert state.is_completed(), state
    expected = {"open-run": "Completed", "rescore:1": "Completed", "train:2": "Completed", "close-run": "Completed"}
    assert task_states(flow_run_id, set(expected)) == expected
    new = state.result()
    arts = new["artefacts"]
    rescored = arts["rescore:1"]
    assert rescored["kind"] == "curriculum" and rescored["path"] == str(Path(new["run_dir"]) / "rescore-1")
    manifest = json.loads((Path(rescored["path"]) / "manifest.json").read_text())
    # stage 1's weights answered the problems of stage 2 of the first run's curation
    assert manifest["rescored"]["model"] == record["artefacts"]["train:1"]["path"]
    assert manifest["rescored"]["from"] == record["artefacts"]["curate"]["path"]
    assert manifest["rescored"]["pool"] == record["artefacts"]["curate"]["meta"]["stages"][1]["count"]
    # stage 2 trained on the re-staged stage 2 (8 prompts a step, 1 epoch), from the first run's stage 1
    assert arts["train:2"]["meta"]["steps"] == max(1, manifest["curriculum"]["stages"][1]["count"] // 8)
    assert arts["train:2"]["meta"]["start_model"] == record["artefacts"]["train:1"]["path"]
    t = tracker(in_project)
    children = {c.info.run_name: c for c in t.children(new["mlflow"]["run_id"])}
    assert set(children) == {"rescore:1", "train:2"}
    assert children["train:2"].data.params["curriculum"] == rescored["path"]
    assert children["rescore:1"].data.metrics["pool"] == manifest["rescored"]["pool"]
    assert children["rescore:1"].data.metrics["changed_stage"] == manifest["rescored"]["changed_stage"]
    assert rescored["mlflow_run_id"] == children["rescore:1"].info.run_id
    assert "rescore-1" in prefect_artifacts(flow_run_id)

    # the same steps again: both cached, stage 2's weights untouched
    mtime = (Path(arts["train:2"]["path"]) / "model.safetensors").stat().st_mtime_ns
    state, flow_run_id = run_pipeline(**kwargs)
    assert state.is_completed()
    states = task_states(flow_run_id, {"rescore:1", "train:2"})
    assert (states["rescore:1"], states["train:2"]) == ("Cached", "Cached")
    assert (Path(arts["train:2"]["path"]) / "model.safetensors").stat().st_mtime_ns == mtime


def test_the_command_line_runs_the_flow_and_reports(in_project, first_run, capsys):
    from sent.cli import main

    assert (
        main(["pipeline", "--config", "pipeline.yaml", "--steps", "eval:base,eval", "--run-dir", "data/runs/first"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"pipeline run finished: {in_project / 'data' / 'runs' / 'first'}" in out
    assert "starting model (" in out and "trained model (" in out and "| **mean** |" in out
    assert "Trained model against its start, avg@2 per problem (paired, Student t)" in out and "| all |" in out
    assert "orchestration and tracking" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert main(["pipeline", "--config", "pipeline.yaml", "--steps", "train"]) == 2
    assert "error: unknown steps ['train']" in capsys.readouterr().err


def test_the_train_step_runs_stages_on_the_verl_engine(in_project, first_run, monkeypatch):
    """engine: verl through the pipeline, with tests/fake_verl_job.py standing in for verl's GPU trainer."""
    import os

    from sent_testing import ROOT

    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    fake = [
        "training.engine=verl",
        "training.verl.trainer_module=fake_verl_job",
        "training.verl.merger_module=fake_verl_job",
        "training.train_batch_size=2",
        "training.mini_batch_size=2",
    ]
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:  # verl training is GPU work: its 8 GPUs' slots of `gpu`
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu", limit=8))
        state, _ = run_pipeline(reuse="data/runs/first", steps=["train:1", "train:2"], overrides=fake)
        assert state.is_completed(), state
        assert client.read_global_concurrency_limit_by_name("gpu").active_slots == 0  # released
    new = state.result()
    t = tracker(in_project)
    children = {c.info.run_name: c for c in t.children(new["mlflow"]["run_id"])}
    offset = 0
    for stage in (1, 2):
        art = new["artefacts"][f"train:{stage}"]
        stage_dir = Path(new["run_dir"]) / f"stage-{stage}"
        job = json.loads((stage_dir / "verl" / "checkpoints" / "fake_job.json").read_text())
        # verl's own MLflow logger would write into the stage's child run
        assert job["env"] == {
            "MLFLOW_TRACKING_URI": new["mlflow"]["tracking_uri"],
            "MLFLOW_RUN_ID": art["mlflow_run_id"],
        }
        assert children[f"train:{stage}"].info.run_id == art["mlflow_run_id"]
        assert art["meta"]["engine"] == "verl" and art["meta"]["verl_checkpoint"].endswith(
            f"global_step_{art['meta']['steps']}"
        )
        assert (stage_dir / "verl" / "command.sh").read_text().startswith("MLFLOW_RUN_ID=")
        offset += art["meta"]["steps"]
    start2 = json.loads((Path(new["artefacts"]["train:2"]["path"]) / "stage.json").read_text())["start_model"]
    assert start2 == new["artefacts"]["train:1"]["path"]  # stage 2 from stage 1's merged weights
    curve = t.client.get_metric_history(new["mlflow"]["run_id"], "train/actor/pg_loss")
    assert sorted(m.step for m in curve) == list(range(1, offset + 1))  # both stages, end to end


def test_the_stage_flows_run_their_step_alone(in_project, first_run):
    from flows.evaluate import sent_evaluate
    from flows.train import sent_train_stage

    record, _ = first_run
    trained = sent_train_stage(stage=2, config="pipeline.yaml", reuse="data/runs/first")
    assert trained["steps"] == ["train:2"] and trained["status"] == "finished"
    assert trained["artefacts"]["train:1"] == record["artefacts"]["train:1"]
    evaluated = sent_evaluate(config="pipeline.yaml", reuse=trained["run_dir"])
    assert evaluated["steps"] == ["eval"]
    results = json.loads(Path(evaluated["artefacts"]["eval"]["path"]).read_text())
    assert results["model"] == trained["artefacts"]["train:2"]["path"]  # the reused run's last stage


def test_a_second_pipeline_on_one_run_directory_is_refused_before_it_writes(in_project):
    """Another process holds the run directory (here: this one, through another open file, which
    flock treats alike): the flow fails at once, naming the holder; no run.json, no MLflow run."""
    import os

    from sent.locks import LockedError, exclusive

    run = in_project / "data" / "runs" / "held"
    runs_before = len(tracker(in_project).client.search_runs([tracker(in_project).experiment_id]))
    with exclusive(run, "pipeline run"):
        state, _ = run_pipeline(run_dir=str(run), steps=["curate"])
        with pytest.raises(LockedError, match=rf"{run} is being written by another pipeline run \(PID {os.getpid()} "):
            state.result()
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the refused run wrote nothing
    assert list(run.iterdir()) == []  # and the holder's lock file went with it
    assert len(tracker(in_project).client.search_runs([tracker(in_project).experiment_id])) == runs_before
