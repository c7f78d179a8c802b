"""Running a planned verl stage (`sent.engines.verl.plan_stage`): the job as a subprocess (local
Ray, or ``ray job submit`` to a cluster) whose log streams into ours and whose step metrics are
kept as they come, a stop that waits for the job's next checkpoint, the end of whatever the job
leaves running in its session (`end_session`), and the merge of the final
FSDP checkpoint into Hugging Face weights (``python -m verl.model_merger merge``) that the next
stage starts from. ``resume_mode=auto`` makes a retry of the same stage continue from its last
checkpoint; a deliberately new run gets a new directory (and so a new experiment name).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sent import interrupt
from sent.config import SentConfig
from sent.data_contract import json_safe
from sent.engines.stage import clear_finished, write_history, write_summary
from sent.engines.verl import StagePlan, VerlEngineError, write_validation_set
from sent.ray_address import check_ray_address
from sent.redaction import redact_text

logger = logging.getLogger(__name__)
_LOG_TAIL = 200
_STEP_LINE = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")


def merge_command(plan: StagePlan, step: int, backend: str = "fsdp", module: str = "verl.model_merger") -> list[str]:
    """``python -m verl.model_merger merge`` of the actor at ``global_step_<step>`` into HF weights."""
    return [
        sys.executable,
        "-m",
        module,
        "merge",
        "--backend",
        backend,
        "--local_dir",
        str(plan.checkpoint_dir / f"global_step_{step}" / "actor"),
        "--target_dir",
        str(plan.merged_dir),
    ]


def latest_step(checkpoint_dir: Path) -> int:
    marker = checkpoint_dir / "latest_checkpointed_iteration.txt"
    if not marker.is_file():
        raise VerlEngineError(f"{checkpoint_dir}: no checkpoint was written (no {marker.name})")
    return int(marker.read_text().strip())


def parse_step_metrics(line: str) -> tuple[int, dict[str, float]] | None:
    """verl's console logger line ``step:12 - actor/pg_loss:0.1 - ...`` as (step, metrics)."""
    m = _STEP_LINE.search(line)
    if m is None:
        return None
    metrics = {}
    for part in m.group(2).split(" - "):
        key, _, value = part.partition(":")
        try:
            metrics[key.strip()] = float(value)
        except ValueError:
            continue
    return int(m.group(1)), metrics


class StopAtCheckpoint:
    """When a stop is requested, a verl job ends once it has written a checkpoint after the
    request (every ``trainer.save_freq`` steps), so that a rerun resumes from there: verl has no
    safe point of its own that a signal reaches, and killing it mid-step loses the steps since
    its last checkpoint."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.at_request: int | None = None

    def _latest(self) -> int:
        try:
            return latest_step(self.checkpoint_dir)
        except (VerlEngineError, ValueError, OSError):
            return 0

    def __call__(self) -> bool:
        if self.at_request is None:
            self.at_request = self._latest()
            logger.warning(
                "stopping the verl job after its next checkpoint (after step %d; trainer.save_freq)", self.at_request
            )
            return False
        return self._latest() > self.at_request


def _end(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM the job's process group (the trainer and the local Ray it started), SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def end_session(sid: int, what: str = "the job") -> int:
    """SIGKILL what is left of session ``sid`` (a job started with ``start_new_session``) once the
    job itself has ended; returns how many processes that was.

    vLLM's engine core runs in a process group of its own inside the job's session. When the job
    dies without shutting its workers down (SIGKILL, the OOM killer), the engine core outlives it
    and ``ray stop``: seen after the kill -9 test, an orphan holding about 3 GB (on a GPU, the
    GPU's memory). A job that ended normally leaves nothing, and this finds nothing. Linux only
    (``/proc``); elsewhere a no-op."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return 0
    ended = 0
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
                ended += 1
    if ended:
        logger.info("%s: ended %d processes it left behind (vLLM's engine core and workers)", what, ended)
    return ended


def stream(
    command: list[str], env: dict[str, str], what: str, on_line=None, stop_when: Callable[[], bool] | None = None
) -> None:
    """Run ``command``, forwarding its output line by line to our log; a non-zero exit raises with
    the last lines of the output. Once a stop is requested (`sent.interrupt`) and ``stop_when()``
    says the job may end (`StopAtCheckpoint`), the job is ended and `Interrupted` raised; a job
    that is never to be cut (``stop_when`` None) runs to its end. However this returns (a second
    signal included), the job does not outlive it."""
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL)
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group, ended as one; signals reach us, not it
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(out=proc.stdout) -> None:
        for raw in out:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name=f"{what} log").start()
    try:
        while True:
            try:
                raw = lines.get(timeout=1.0)  # a silent job still gets its stop checked each second
            except queue.Empty:
                raw = ""
            if raw is None:
                break
            if raw:
                line = redact_text(raw.rstrip("\n"))  # a library may print a URI it was given, credentials and all
                tail.append(line)
                logger.info("[%s] %s", what, line)
                if on_line is not None:
                    on_line(line)
            if stop_when is not None and interrupt.requested() is not None and stop_when():
                _end(proc)
                interrupt.check(f"after {what} wrote a checkpoint (a rerun resumes from it)")
    except BaseException:  # a stop, a second signal, an error in a callback: the job goes too
        _end(proc)
        end_session(proc.pid, what)
        raise
    rc = proc.wait()  # its output ended: it is exiting by itself
    end_session(proc.pid, what)
    if rc != 0:
        raise VerlEngineError(f"{what} exited with status {rc}; last lines:\n" + "\n".join(tail))


def run_stage(plan: StagePlan, cfg: SentConfig, *, callback=None, fresh: bool = False) -> dict[str, Any]:
    """Run the stage's verl job, then merge its last checkpoint into ``plan.merged_dir``.
    Returns the stage summary (also written to ``final/stage.json``).

    An interrupted stage resumes from its last verl checkpoint (``resume_mode=auto``). A finished
    stage is trained again only with ``fresh=True``, which moves the old stage directory aside
    first (so verl cannot resume from it)."""
    if not plan.curated:
        raise VerlEngineError(f"stage {plan.stage} has no curriculum yet: {plan.train_files[0]} does not exist")
    if plan.ray_address is not None:
        check_ray_address(plan.ray_address, "training.verl.ray_address")  # `ray job submit` would retry it
    if plan.rows is not None and plan.rows < plan.batch_size:
        # verl's dataloader drops the last partial batch: no step at all (ZeroDivisionError in verl's fit)
        raise VerlEngineError(
            f"stage {plan.stage} has {plan.rows} problems, fewer than training.train_batch_size={plan.batch_size}: "
            "verl drops a partial batch, so no step would run. Lower train_batch_size, curate more problems "
            "(data.limit), or use fewer stages (curriculum.n_stages)."
        )
    clear_finished(plan.out_dir, plan.stage, fresh=fresh, error=VerlEngineError)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.training.verl.val_files and not plan.val_files[0].is_file():
        write_validation_set(cfg, plan.val_files[0])
    metrics_path = plan.out_dir / "metrics.jsonl"
    _drop_torn_tail(metrics_path)
    history: list[dict[str, float]] = []

    def on_line(line: str) -> None:
        parsed = parse_step_metrics(line)
        if parsed is not None:
            step, metrics = parsed
            history.append({"step": float(step), **metrics})
            with metrics_path.open("a") as f:  # kept as it comes: a killed job's steps survive its resume
                f.write(json.dumps(json_safe(history[-1])) + "\n")
            if callback is not None:
                callback(step, metrics)

    t0 = time.perf_counter()
    logger.info("stage %d: verl job\n%s", plan.stage, plan.shell())
    stop = StopAtCheckpoint(plan.checkpoint_dir)
    stream(plan.command, {**plan.env, **plan.secret_env}, f"verl stage {plan.stage}", on_line, stop_when=stop)
    step = latest_step(plan.checkpoint_dir)
    tmp = plan.merged_dir.with_name(".final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a merge interrupted earlier
    merge = merge_command(plan, step, cfg.training.verl.merge_backend, cfg.training.verl.merger_module)
    merge[merge.index("--target_dir") + 1] = str(tmp)
    stream(merge, {}, f"merge stage {plan.stage}")
    summary = {
        "stage": plan.stage,
        "steps": step,
        "start_model": plan.start_model,
        "loss": cfg.training.loss,
        "engine": "verl",
        "checkpoint": str(plan.checkpoint_dir / f"global_step_{step}"),
        "seconds": time.perf_counter() - t0,
        "last_metrics": history[-1] if history else {},
    }
    online = finish_online(plan, step)
    write_step_history(metrics_path, online)  # before the summary, which records its digest
    write_summary(tmp, summary)
    tmp.rename(plan.merged_dir)
    return summary


def _drop_torn_tail(path: Path) -> None:
    """A job killed while appending a line leaves it cut: drop it before the resumed job appends."""
    if path.is_file():
        text = path.read_text()
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1])


def finish_online(plan: StagePlan, step: int) -> dict[int, dict[str, float]]:
    """``curriculum.mode: online``: the stage's whole history from its record, the last step's
    included (verl's hook never sees it), written beside the stage; each step's metrics."""
    if plan.online is None:
        return {}
    from sent.online_stream import OnlineStream

    stream = OnlineStream.from_rows_file(plan.online)
    stream.resume(step)
    logger.info("stage %d: online SE of %d steps in %s", plan.stage, stream.taken, plan.online.history)
    return stream.metrics


def write_step_history(path: Path, extra: dict[int, dict[str, float]] | None = None) -> list[dict[str, float]]:
    """``metrics.jsonl`` with one line per step, in step order, each with its ``extra`` metrics.
    A resumed job repeats the steps after its last checkpoint; the last run of each step is the
    one its weights came from."""
    by_step: dict[float, dict[str, float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                by_step[row["step"]] = row
    for step, metrics in (extra or {}).items():
        if float(step) in by_step:
            by_step[float(step)].update(metrics)
    rows = [by_step[k] for k in sorted(by_step)]
    write_history(path.parent, rows)
    return rows
