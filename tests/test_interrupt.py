"""Services fail fast and runs stop cleanly: `sent pipeline` as a real process (its own ephemeral
Prefect server, a real MLflow sqlite store), stopped with a real SIGTERM or SIGINT, or pointed at an
MLflow server that is not there.

What must hold after a signal: the process exits by itself (128 + the signal), at a safe point;
``run.json`` says ``interrupted``; the MLflow parent run and the step's child run are KILLED; the
Prefect flow run is Failed, not left Running; the stage's finished steps are checkpointed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sent.interrupt import Interrupted, check, handle_signals

from sent_testing import ROOT, pipeline_config

pytestmark = pytest.mark.slow
SENT = [sys.executable, "-m", "sent.cli"]


@pytest.fixture
def project(tmp_path, tiny_toy):
    root = tmp_path / "project"
    root.mkdir()
    cfg = pipeline_config(tiny_toy)
    cfg["training"].update({"epochs_per_stage": 4})  # 24 steps: long enough to be stopped in the middle
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return root, env


def _start(project, *args: str) -> subprocess.Popen:
    root, env = project
    log = (root / "pipeline.log").open("w")
    return subprocess.Popen(
        [*SENT, "pipeline", "--config", "pipeline.yaml", *args], cwd=root, env=env, stdout=log, stderr=log
    )


def _wait_for(predicate, timeout: float, proc: subprocess.Popen, root: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(
                f"the pipeline exited early ({proc.returncode}):\n{(root / 'pipeline.log').read_text()[-3000:]}"
            )
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"timed out waiting:\n{(root / 'pipeline.log').read_text()[-3000:]}")


def _run_dir(root: Path) -> Path | None:
    runs = sorted((root / "data" / "runs").glob("pipeline-*")) if (root / "data" / "runs").is_dir() else []
    return runs[-1] if runs else None


def _mlflow_statuses(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "data" / "mlflow.db") as db:
        return dict(db.execute("select name, status from runs").fetchall())


def _flow_run_states(env: dict) -> list[tuple[str, str]]:
    with sqlite3.connect(Path(env["PREFECT_HOME"]) / "prefect.db") as db:
        return db.execute("select state_type, state_name from flow_run").fetchall()


@pytest.mark.parametrize(("signum", "during"), [(signal.SIGTERM, "train:1"), (signal.SIGINT, "curate")])
def test_a_signal_stops_the_run_at_a_safe_point_and_closes_it(project, signum, during):
    root, env = project
    proc = _start(project)
    if during == "train:1":  # a few training steps in

        def ready():
            run = _run_dir(root)
            metrics = run / "stage-1" / "metrics.jsonl" if run else None
            return metrics is not None and metrics.is_file() and len(metrics.read_text().splitlines()) >= 2
    else:  # curation under way (its run record written, the curation directory locked)

        def ready():
            return any((root / "data" / "runs").glob("curate-*/.lock")) if (root / "data" / "runs").is_dir() else False

    _wait_for(ready, 240, proc, root)
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 120 s after {signum.name}:\n{(root / 'pipeline.log').read_text()[-3000:]}")
    log = (root / "pipeline.log").read_text()
    assert code == 128 + signum, log[-3000:]
    assert time.monotonic() - t0 < 120
    assert f"error: stopped by {signum.name}" in log
    assert "Traceback" not in log, log[-3000:]  # an expected stop is a line, not a traceback

    run = _run_dir(root)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert record["error"].startswith(f"Interrupted: stopped by {signum.name}")
    statuses = _mlflow_statuses(root)
    assert statuses[run.name] == "KILLED"
    assert statuses[during] == "KILLED"
    assert "RUNNING" not in statuses.values()
    assert ("FAILED", "Failed") in _flow_run_states(env)  # not left Running
    if during == "train:1":
        checkpoints = sorted((run / "stage-1" / "checkpoints").glob("step-*"))
        done = len((run / "stage-1" / "metrics.jsonl").read_text().splitlines())
        assert checkpoints and checkpoints[-1].name == f"step-{done:06d}", "every finished step is checkpointed"
        assert (checkpoints[-1] / "state.json").is_file()


def test_an_unreachable_mlflow_server_fails_within_30_s_with_the_way_out(project):
    root, env = project
    env = {**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens on the discard port
    t0 = time.monotonic()
    done = subprocess.run(
        [*SENT, "pipeline", "--config", "pipeline.yaml"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - t0
    assert done.returncode == 2, done.stderr[-3000:]
    assert elapsed < 30, f"took {elapsed:.0f} s"
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the MLflow tracking server http://127.0.0.1:9 cannot be reached")
    assert "MLFLOW_TRACKING_URI" in last
    assert "Traceback" not in done.stderr
    assert not (Path(env["PREFECT_HOME"]) / "prefect.db").exists()  # refused before any flow started


def test_an_unreachable_prefect_api_is_an_error_line(project):
    root, env = project
    env = {**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run(
        [*SENT, "pipeline", "--config", "pipeline.yaml"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Failed to reach API at http://127.0.0.1:9/api")
    assert "prefect server start" in last


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: their command lines (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(stat.parent.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kill_9_of_a_pipeline_stops_its_temporary_prefect_server(project):
    """Prefect stops its temporary server at exit; a kill -9 runs no exit handler, and the server
    (uvicorn, its port, its sqlite database) outlived the pipeline. The watchdog stops it."""
    root, _ = project
    proc = _start(project)

    def server_and_watchdog():
        children = _children(proc.pid)
        server = [pid for pid, cmd in children.items() if "uvicorn" in cmd and "prefect.server" in cmd]
        watchdog = [pid for pid, cmd in children.items() if "sent.prefect_server" in cmd]
        return (server[0], watchdog[0]) if server and watchdog else None

    server, watchdog = _wait_for(server_and_watchdog, 240, proc, root)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while (_alive(server) or _alive(watchdog)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(server), "the temporary Prefect server outlived the killed pipeline"
    assert not _alive(watchdog)


def test_check_raises_only_after_a_signal_and_a_second_signal_stops_at_once():
    with handle_signals():
        check("nowhere")  # nothing requested: returns
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes
        with pytest.raises(Interrupted, match="stopped by SIGTERM after step 3") as info:
            check("after step 3")
        assert info.value.exit_code == 143
        with pytest.raises(KeyboardInterrupt) as second:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert second.value.exit_code == 143  # 128 + SIGTERM, as a process killed by it (not 130, Ctrl-C's)
    check("after the block")  # the request ends with the block
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(store: Path, env: dict) -> tuple[subprocess.Popen, int]:
    """A real MLflow tracking server (no auth: it ignores the userinfo, as a proxy in front would not)."""
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'server.db'}", "--artifacts-destination", str(store / "art")],
        cwd=store, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, port
        except OSError:
            assert proc.poll() is None, "the MLflow server did not start"
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the MLflow server did not answer within 120 s")


def _files_holding(needle: bytes, *roots: Path) -> list[str]:
    return [
        str(p) for root in roots if root.exists() for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()
    ]


def test_no_file_a_run_writes_and_no_line_it_prints_holds_the_tracking_credentials(project, tmp_path):
    """A pipeline tracked on a server whose URI carries a password (in MLFLOW_TRACKING_URI, the one
    supported place: a config value with credentials is refused at load): the password is in no
    output line and in no file under the project, the server's store or Prefect's home. Then the
    server dies in the middle of training: the error is one redacted line, and the run is closed."""
    root, env = project
    store = tmp_path / "mlflow-server"
    store.mkdir()
    server, port = _mlflow_server(store, env)
    env = {**env, "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}"}
    try:
        args = ["--run-dir", "data/runs/ok", "training.epochs_per_stage=1"]
        done = subprocess.run(
            [*SENT, "pipeline", "--config", "pipeline.yaml", *args], cwd=root, env=env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "s3cret" not in done.stdout + done.stderr
        assert json.loads((root / "data" / "runs" / "ok" / "run.json").read_text())["status"] == "finished"

        # long enough (about a minute) for the server to die in the middle of it
        args = ["--run-dir", "data/runs/dies", "--steps", "train:1", "--reuse", "data/runs/ok"]
        args.append("training.epochs_per_stage=40")
        proc = subprocess.Popen(
            [*SENT, "pipeline", "--config", "pipeline.yaml", *args],
            cwd=root, env=env, stdout=(root / "pipeline.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        metrics = root / "data" / "runs" / "dies" / "stage-1" / "metrics.jsonl"
        _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, 600, proc, root)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
        server.wait()
    assert proc.wait(timeout=300) != 0
    log = (root / "pipeline.log").read_text()
    assert "s3cret" not in log
    assert any(line.startswith("error: MLflow ") for line in log.splitlines()), log[-3000:]
    assert json.loads((root / "data" / "runs" / "dies" / "run.json").read_text())["status"] == "failed"
    assert _files_holding(b"s3cret", root, store, Path(env["PREFECT_HOME"])) == []
