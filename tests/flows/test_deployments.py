"""prefect.yaml against a real Prefect server started on 127.0.0.1 by the test: every deployment is
created with its schedule and parameters, and a stage deployment triggered with `run_deployment`
is executed to completion by a real process worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sent_testing import ROOT, pipeline_config

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server of its own (temporary home and database); yields the environment to reach it."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
    }
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the Prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def prefect(env, *args, cwd=None, timeout=180) -> str:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_prefect_yaml_deploys_and_a_stage_deployment_runs_on_a_worker(server, tmp_path, tiny_toy):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sent.tracking import Tracker

    project = tmp_path / "project"  # the worker's SENT_PROJECT_DIR: configs and data live here
    project.mkdir()
    (project / "tiny.yaml").write_text(yaml.safe_dump(pipeline_config(tiny_toy)))
    env = {**server, "SENT_PROJECT_DIR": str(project)}
    for pool in ("cpu", "gpu"):
        prefect(env, "work-pool", "create", pool, "--type", "process")
    prefect(env, "deploy", "--all", "--prefect-file", str(ROOT / "prefect.yaml"), cwd=project)

    declared = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            assert set(deployments) == set(declared)
            for name, d in deployments.items():
                assert d.work_pool_name == declared[name]["work_pool"]["name"]
                assert d.parameters == declared[name]["parameters"]
            (schedule,) = deployments["sent-pipeline"].schedules
            assert schedule.schedule.cron == "0 3 * * 1" and schedule.active is False  # retraining, off by default
            flow_name = client.read_flow(deployments["sent-curate"].flow_id).name

        flow_run = run_deployment(
            f"{flow_name}/sent-curate",
            parameters={"config": "tiny.yaml", "overrides": ["data.limit=16", "sampling.n=2"]},
            timeout=0,
        )
        worker = subprocess.run(
            [PREFECT, "worker", "start", "--pool", "gpu", "--run-once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        with get_client(sync_client=True) as client:
            final = client.read_flow_run(flow_run.id)
    assert final.state.is_completed(), f"{final.state}\n{worker.stdout[-4000:]}\n{worker.stderr[-4000:]}"

    # it ran in SENT_PROJECT_DIR: the curation, the run record and the MLflow store are there
    (run_dir,) = (project / "data" / "runs").glob("pipeline-*")
    record = yaml.safe_load((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["prefect_flow_run_id"] == str(flow_run.id)
    assert Path(record["artefacts"]["curate"]["path"]).parent == project / "data" / "runs"
    tracker = Tracker(f"sqlite:///{project / 'data' / 'mlflow.db'}", "sent")
    assert [r.info.run_name for r in tracker.children(record["mlflow"]["run_id"])] == ["curate"]


def test_a_cancel_from_prefect_ends_the_run_cancelled_at_a_safe_point(server, tmp_path, tiny_toy):
    """The toy pipeline deployment on a real process worker, cancelled from the API (as the UI's
    Cancel does) in the middle of training: the worker sends SIGTERM with its cancel intent; the
    run stops at the next safe point, closes its record as interrupted, and the flow run ends
    Cancelled, not Failed (a plain SIGTERM, with no intent, ends as before: tests/test_interrupt.py)."""
    import json
    import signal

    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    project = tmp_path / "project"
    project.mkdir()
    cfg = pipeline_config(tiny_toy)
    cfg["training"]["epochs_per_stage"] = 40  # a stage of a minute or more: cancelled in its middle
    (project / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = {**server, "SENT_PROJECT_DIR": str(project)}
    prefect(env, "work-pool", "create", "cpu", "--type", "process", "--overwrite")
    prefect(env, "deploy", "--name", "sent-pipeline-toy", "--prefect-file", str(ROOT / "prefect.yaml"), cwd=project)
    with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            flow_name = client.read_flow(client.read_deployment_by_name("sent-pipeline/sent-pipeline-toy").flow_id).name
        flow_run = run_deployment(f"{flow_name}/sent-pipeline-toy", parameters={"config": "tiny.yaml"}, timeout=0)
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            metrics = list((project / "data" / "runs").glob("pipeline-*/stage-1/metrics.jsonl"))
            while not (metrics and len(metrics[0].read_text().splitlines()) >= 3):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-4000:]
                time.sleep(1)
                metrics = list((project / "data" / "runs").glob("pipeline-*/stage-1/metrics.jsonl"))
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
                while not (state := client.read_flow_run(flow_run.id).state).is_final():
                    assert time.monotonic() < deadline + 180, (tmp_path / "worker.log").read_text()[-4000:]
                    time.sleep(1)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            log.close()
    text = (tmp_path / "worker.log").read_text()
    assert state.is_cancelled(), f"{state}\n{text[-4000:]}"
    record = json.loads((metrics[0].parent.parent / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"].startswith("Interrupted: stopped by SIGTERM")
    assert not (metrics[0].parent / "final").exists(), "stopped in the middle of the stage"
