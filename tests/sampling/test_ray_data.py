"""Curation on Ray Data (`sampling.executor: ray`, sent.sampling.ray_data) against the local loop,
on the tiny toy model and a real local Ray: the same samples, scores, stages and shards; resume
after kill -9; what the executor may and may not change."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from sent.curate import curate, curation_digest
from sent.data_contract import load_curriculum

from sent_testing import ROOT, parquet_difference, toy_config

pytest.importorskip("ray.data", reason="needs Ray Data (it comes with verl)")
pytestmark = pytest.mark.slow

SMALL = ["sampling.n=4", "sampling.chunk_size=10", "sampling.batch_size=10", "curriculum.shard_rows=16"]
LIMIT = 40  # 4 chunks
EXACT = ["sampling.text", "sampling.n_tokens", "sampling.answer", "sampling.correct", "sampling.class_id"]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def local(tiny_toy, tmp_path_factory):
    cfg = toy_config(tiny_toy, *SMALL)
    return curate(cfg, out=tmp_path_factory.mktemp("local") / "run", limit=LIMIT).out_dir


def _same_samples(a, b, *, exact_floats: bool) -> None:
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema.equals(tb.schema) and ta.num_rows == tb.num_rows
    for name in ta.column_names:
        x, y = ta[name].to_pylist(), tb[name].to_pylist()
        if name == "logprob" and not exact_floats:  # summed in another order with other thread counts
            assert all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-6) for u, v in zip(x, y, strict=True)), name
        else:
            assert x == y, f"{a.name}: column {name} differs"


def test_one_actor_with_this_process_threads_equals_the_local_loop_exactly(local, tiny_toy, tmp_path):
    cfg = toy_config(tiny_toy, *SMALL, "sampling.executor=ray", "ray.replicas=1", f"ray.cpus_per_actor={_threads()}")
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    out = curate(cfg, out=tmp_path / "ray", limit=LIMIT).out_dir
    # ray.init installs a SIGTERM handler of its own: ours (sent.interrupt's, or the default) are back
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    for name in ["scores.parquet", *[f"samples/part-0000{i}.parquet" for i in range(4)]]:
        assert parquet_difference(out / name, local / name) is None
    for stage in (1, 2):
        assert load_curriculum(out, stage).equals(load_curriculum(local, stage))


def test_two_actors_give_the_same_curation_to_float_rounding(local, tiny_toy, tmp_path):
    # 2 actors of 1 CPU: each chunk is sampled by whichever actor is free, with 1 torch thread.
    # Tokens, texts, answers, grades and classes are the same; log-probabilities agree to rounding
    # (with another thread count than this process's), and so do the weighted entropies; the stages
    # are the same problems in the same order.
    cfg = toy_config(tiny_toy, *SMALL, "sampling.executor=ray", "ray.replicas=2", "ray.cpus_per_actor=1")
    out = curate(cfg, out=tmp_path / "ray", limit=LIMIT).out_dir
    for i in range(4):
        name = f"samples/part-0000{i}.parquet"
        _same_samples(out / name, local / name, exact_floats=_threads() == 1)
    ours, theirs = (
        pq.read_table(out / "scores.parquet").to_pylist(),
        pq.read_table(local / "scores.parquet").to_pylist(),
    )
    for a, b in zip(ours, theirs, strict=True):
        # exp of length-normalised log-probabilities: their rounding, relatively (measured: 1.3e-9)
        assert math.isclose(a.pop("weighted_semantic_entropy"), b.pop("weighted_semantic_entropy"), rel_tol=1e-6)
        assert a == b
    for stage in (1, 2):
        ids = [r["id"] for r in load_curriculum(out, stage).column("extra_info").to_pylist()]
        assert ids == [r["id"] for r in load_curriculum(local, stage).column("extra_info").to_pylist()]


def test_the_executor_is_not_part_of_the_curation_identity(local, tiny_toy):
    # where the work ran does not change what it made: a ray config finds the local curation
    ray_cfg = toy_config(tiny_toy, *SMALL, "sampling.executor=ray", "ray.replicas=4")
    assert curation_digest(ray_cfg) == curation_digest(toy_config(tiny_toy, *SMALL))
    assert curate(ray_cfg, out=local, limit=LIMIT).reused  # no Ray started: nothing to do


def test_vllm_without_ray_data_llm_is_refused_before_ray_starts(tiny_toy, tmp_path, monkeypatch):
    import ray

    from sent.sampling.pieces import RayExecutorError

    monkeypatch.setitem(sys.modules, "ray.data.llm", None)  # as where ray.data.llm cannot import
    cfg = toy_config(tiny_toy, *SMALL, "sampling.executor=ray", "sampling.backend=vllm")
    with pytest.raises(RayExecutorError, match=r"pip install -e '\.\[gpu\]'"):
        curate(cfg, out=tmp_path / "ray", limit=LIMIT)
    assert not ray.is_initialized()


def _ray_curation_command(tiny_toy, out, limit: int = LIMIT) -> list[str]:
    args = [
        f"model.path={tiny_toy.model_dir}",
        f"data.train_path={tiny_toy.train_path}",
        f"toy.data_dir={tiny_toy.test_path.parent}",
        f"toy.model_dir={tiny_toy.model_dir}",
        *SMALL,
        "curriculum.drop_zero_signal=false",
        "sampling.executor=ray",
        "ray.replicas=1",
        f"ray.cpus_per_actor={_threads()}",
    ]
    cmd = [sys.executable, "-m", "sent.cli", "curate", "--config", str(ROOT / "configs" / "toy.yaml")]
    return [*cmd, "--limit", str(limit), "--out", str(out), *args]


def _wait_for_a_chunk(proc, samples) -> None:
    deadline = time.time() + 600
    while not list(samples.glob("part-*.parquet")):
        assert proc.poll() is None, "curation ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.02)


def test_sigterm_stops_a_ray_curation_after_a_chunk_and_names_the_way_back(tiny_toy, tmp_path):
    # sent.interrupt's handler, not Ray's (ray.init installs its own in the driver): the driver
    # stops at the next written chunk, Ray is shut down, and the message says a rerun resumes
    # 20 chunks: the signal comes within 20 ms of the first, long before the last
    cmd = _ray_curation_command(tiny_toy, tmp_path / "stopped", limit=200)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_a_chunk(proc, tmp_path / "stopped" / "samples")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM after sampling chunk" in err and "a rerun resumes from there" in err
    assert not (tmp_path / "stopped" / "manifest.json").exists()


def test_kill_9_then_rerun_on_ray_resumes_with_the_missing_chunks(local, tiny_toy, tmp_path):
    cmd = _ray_curation_command(tiny_toy, tmp_path / "killed")
    samples = tmp_path / "killed" / "samples"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_a_chunk(proc, samples)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "manifest.json").exists()
    parts = sorted(samples.glob("part-*.parquet"))
    if len(parts) == 4:  # alone, the tiny model's chunks can all land within one poll: drop two, as
        for part in parts[2:]:  # if the kill had come after the second
            part.unlink()
    done_before = {p.name: p.stat().st_mtime_ns for p in samples.glob("part-*.parquet")}
    assert 1 <= len(done_before) < 4
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    for name, mtime in done_before.items():  # finished chunks were not sampled again
        assert (samples / name).stat().st_mtime_ns == mtime
    for name in ["scores.parquet", *[f"samples/part-0000{i}.parquet" for i in range(4)]]:
        assert parquet_difference(tmp_path / "killed" / name, local / name, float_noise=True) is None
