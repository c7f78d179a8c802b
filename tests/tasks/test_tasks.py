"""The pipeline's building blocks (step planning is in test_steps.py): artefacts and their digests, retries on I/O only,
the GPU concurrency slot (the real Prefect engine where Prefect is involved)."""

from __future__ import annotations

import errno
import os

import pytest

from sent_testing import ROOT


@pytest.fixture(scope="module")
def cfg():
    from sent.config_loading import load_config

    return load_config(ROOT / "configs" / "toy.yaml")


def art(step, path="/nonexistent", kind="model"):
    from tasks.context import Artefact

    return Artefact(kind=kind, step=step, path=path, digest="name:x")


def test_artefacts_know_when_their_files_changed(tmp_path):
    from sent.steps import StepError
    from tasks.context import Artefact

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 100)
    a = Artefact.of("model", "train:1", model)
    assert a.problem() is None and a.verified() is a
    (model / "weights.bin").write_bytes(b"\x01" * 100)  # same size, other content
    assert "changed since it was recorded" in a.problem()
    (model / "weights.bin").unlink()
    model.rmdir()
    with pytest.raises(StepError, match=r"train:1 model .*model no longer exists; rerun the step"):
        a.verified()
    hub = Artefact.of("model", "base", "Qwen/Qwen2.5-7B")
    assert hub.digest.startswith("name:") and hub.problem() is None


def test_directory_digests_hash_small_files_and_fingerprint_large_ones(tmp_path):
    from sent.lineage import path_digest

    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "small.json").write_text("{}")
    (d / "big.bin").write_bytes(b"\x00" * 2048)
    first = path_digest(d, full_hash_bytes=1024)
    (d / "big.bin").write_bytes(b"\x01" * 2048)  # same size; only its mtime tells
    os.utime(d / "big.bin", ns=(1, 1))
    assert path_digest(d, full_hash_bytes=1024) != first
    assert path_digest(d, full_hash_bytes=1024) == path_digest(d, full_hash_bytes=1024)
    before = path_digest(d)
    (d / "small.json").write_text("[]")  # same size, other content: small files are hashed
    os.utime(d / "small.json", ns=(1, 1))
    assert path_digest(d) != before
    manifest_dir = tmp_path / "cur"
    manifest_dir.mkdir()
    (manifest_dir / "manifest.json").write_text('{"a": 1}')
    assert path_digest(manifest_dir) == path_digest(manifest_dir / "manifest.json")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError(errno.EIO, "I/O error"), True),
        (OSError(errno.ESTALE, "stale NFS handle"), True),
        (FileNotFoundError(errno.ENOENT, "missing"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (ValueError("bad data"), False),
    ],
)
def test_only_transient_io_is_retried(exc, transient):
    from tasks.retries import is_transient_io

    assert is_transient_io(exc) is transient


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def test_prefect_retries_io_failures_and_not_the_others(harness):
    from prefect import flow, task

    from tasks.retries import IO_RETRY_OPTIONS

    calls = {"io": 0, "bad": 0}

    @task(**{**IO_RETRY_OPTIONS, "retry_delay_seconds": 0})
    def flaky_io():
        calls["io"] += 1
        if calls["io"] < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    @task(**{**IO_RETRY_OPTIONS, "retry_delay_seconds": 0})
    def bad_input():
        calls["bad"] += 1
        raise ValueError("row 3 'answer': empty")

    @flow
    def both():
        return flaky_io(), bad_input(return_state=True)

    value, bad_state = both()
    assert value == "ok" and calls["io"] == 3  # two retries
    assert bad_state.is_failed() and calls["bad"] == 1  # not retried


def test_sampling_on_ray_holds_a_gpu_slot_per_gpu_of_its_pipeline(cfg):
    from tasks.gpu import gpu_slots

    def with_(**sections):
        return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})

    assert gpu_slots(cfg, "curate") == 0  # the toy config: hf on the CPU, in this process
    assert gpu_slots(with_(sampling={"executor": "ray"}), "curate") == 0  # Ray actors on CPUs
    on_gpus = {"sampling": {"executor": "ray"}, "ray": {"replicas": 8, "gpus_per_replica": 1.0}}
    assert gpu_slots(with_(**on_gpus), "curate") == 8
    assert gpu_slots(with_(sampling={"executor": "ray"}, ray={"replicas": 3, "gpus_per_replica": 0.5}), "curate") == 2
    assert gpu_slots(with_(sampling={"backend": "vllm"}), "curate") == 1  # one engine in this process
    assert gpu_slots(with_(sampling={"backend": "vllm", "tensor_parallel_size": 4}), "curate") == 4  # its GPUs
    assert gpu_slots(with_(**on_gpus), "eval") == 8  # evaluation runs on the same executor
    # vLLM engines through ray.data.llm: replicas x tensor-parallel size, whatever gpus_per_replica says
    engines = {"sampling": {"executor": "ray", "backend": "vllm", "tensor_parallel_size": 2}, "ray": {"replicas": 4}}
    assert gpu_slots(with_(**engines), "curate") == 8
    assert gpu_slots(with_(sampling={"executor": "ray"}, ray={"replicas": 8}), "eval") == 0  # hf actors on CPUs


def test_gpu_work_holds_a_slot_of_the_gpu_limit(harness, cfg):
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    from tasks.gpu import GPU_LIMIT, GpuLimitError, gpu_slot, uses_gpu

    with gpu_slot(cfg, "train") as held:
        assert held is False  # the toy config is CPU work: no slot taken, no limit needed
    gpu_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"engine": "verl"})})
    assert uses_gpu(gpu_cfg, "train") and not uses_gpu(gpu_cfg, "eval")
    cpu_verl = gpu_cfg.training.verl.model_copy(update={"device": "cpu"})
    verl_on_cpu = gpu_cfg.model_copy(update={"training": gpu_cfg.training.model_copy(update={"verl": cpu_verl})})
    assert not uses_gpu(verl_on_cpu, "train")  # verl's trainer on the CPU takes no GPU slot
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    with (
        pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"),
        gpu_slot(gpu_cfg, "train", strict=True),
    ):
        pass
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
        # verl on one node of 8 GPUs holds 8 slots: a limit of 1 could never admit it
        with (
            pytest.raises(GpuLimitError, match=r"train occupies 8 GPUs, but .* has 1 slots.*--limit 8"),
            gpu_slot(gpu_cfg, "train", strict=True),
        ):
            pass
        client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=8))
        with gpu_slot(gpu_cfg, "train", strict=True) as held:
            assert held is True
            assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 8
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0


def test_cache_keys_depend_on_where_outputs_go(tmp_path, monkeypatch):
    """Two checkouts with the same config must not share a cached bootstrap or curation: configs use
    relative paths, and a cached result pointing into the other checkout would be wrong here."""
    from tasks.context import RunContext
    from tasks.curate import _key as curate_key
    from tasks.toy import _key as bootstrap_key

    def keys(where):
        where.mkdir(exist_ok=True)
        monkeypatch.chdir(where)
        ctx = RunContext(
            config=str(ROOT / "configs" / "toy.yaml"),
            root=str(where),
            run_dir=str(where / "run"),
            steps=[],
            tracking_uri="sqlite://",
            experiment="e",
            mlflow_run_id="r",
        )
        return bootstrap_key({"ctx": ctx}), curate_key({"ctx": ctx})

    a, b = keys(tmp_path / "a"), keys(tmp_path / "b")
    assert a[0] != b[0] and a[1] != b[1]
    assert keys(tmp_path / "a") == a  # and stable in one place


def test_a_training_stage_is_keyed_on_its_rollout_batches(tmp_path):
    """The hf sampler seeds each generate call, so a stage's rollouts depend on how many prompts a
    call takes (``training.rollout_batch_size``, following ``sampling.batch_size``): a change of
    either must miss the cache and train the stage again; curation-only sampling keys must not."""
    from tasks.context import Artefact, RunContext
    from tasks.train import _key as train_key

    (tmp_path / "c").mkdir()
    (tmp_path / "m").mkdir()
    curriculum, start = Artefact.of("curriculum", "curate", tmp_path / "c"), Artefact.of("model", "x", tmp_path / "m")

    def key(*overrides):
        ctx = RunContext(
            config=str(ROOT / "configs" / "toy.yaml"),
            overrides=list(overrides),
            root=str(tmp_path),
            run_dir=str(tmp_path / "run"),
            steps=[],
            tracking_uri="sqlite://",
            experiment="e",
            mlflow_run_id="r",
        )
        return train_key({"ctx": ctx, "stage": 1, "curriculum": curriculum, "start": start})

    base = key()
    assert key("sampling.batch_size=64") != base
    assert key("training.rollout_batch_size=64") != base
    assert key("sampling.batch_size=64", "training.rollout_batch_size=128") == base  # 128 is the toy's batch size
    assert key("sampling.chunk_size=64") == base
