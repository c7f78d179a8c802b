"""`sent doctor CONFIG`: what a config will need, checked before GPU hours are spent.

A wrong vLLM/Ray pairing, a missing ``gpu`` concurrency limit, an unreachable tracking server or a
missing data file otherwise shows up minutes into a run, after a model has loaded. Each check
here reads what the run would read and says ``ok``, ``warn`` (the run can go on, but look) or
``fail`` with the fix. Nothing is downloaded, sampled or written.

The checks sit at the CLI's level: the GPU count a phase needs is the one its Prefect task holds
(`tasks.gpu.gpu_slots`), imported when the check runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sent.config import SentConfig

Status = Literal["ok", "warn", "fail"]
DATA_ROWS_CHECKED = 100
"""Training rows read to check the file's fields (the whole file is validated by curation)."""
CHECKPOINT_FACTOR = 3
"""A training checkpoint is about the weights and AdamW's two moments: 3x the weights' bytes."""
PHASES = ("curate", "train", "eval")


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.message}"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") != 1


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def check_model(cfg: SentConfig) -> Finding:
    """The model: a local directory whose config loads, or a hub id in the local cache."""
    from transformers import AutoConfig

    name = cfg.model.path
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # any reason it does not load is the finding
            return Finding("model", "fail", f"{path} does not load as a model ({type(exc).__name__}: {exc})")
        return Finding("model", "ok", f"{path} ({config.model_type})")
    if _looks_like_path(name):
        return Finding("model", "fail", f"{path} does not exist: set model.path to the model's directory")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return Finding("model", "ok", f"{name} (in the local hub cache)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return Finding("model", "fail", f"{name} is not in the local hub cache and HF_HUB_OFFLINE is set: download it")
    return Finding("model", "warn", f"{name} is not in the local hub cache: it is downloaded at first use")


def check_training_data(cfg: SentConfig) -> Finding:
    """The training problems: present, readable, with the configured fields."""
    from sent.errors import SentError
    from sent.problems import Unreadable, read_rows

    path = Path(cfg.data.train_path)
    if not path.exists():
        return Finding(
            "training data",
            "fail",
            f"{path} does not exist: `sent data fetch` writes the paper's, or set data.train_path",
        )
    fields = cfg.data.fields
    wanted = [f for f in (fields.problem, fields.answer, fields.id) if f]
    try:
        rows = list(read_rows(path, cfg.data.format, limit=DATA_ROWS_CHECKED))
    except (SentError, OSError, ValueError) as exc:
        return Finding("training data", "fail", str(exc))
    if not rows:
        return Finding("training data", "fail", f"{path} has no rows")
    for number, row, _ in rows:
        if isinstance(row, Unreadable):
            return Finding("training data", "fail", f"{path} row {number}: {row}")
        missing = [f for f in wanted if not isinstance(row, dict) or f not in row]
        if missing:
            return Finding(
                "training data",
                "fail",
                f"{path} row {number} has no field {missing[0]!r} (data.fields maps the columns)",
            )
    return Finding("training data", "ok", f"{path} (first {len(rows)} rows have {', '.join(wanted)})")


def check_benchmarks(cfg: SentConfig) -> Finding:
    """Every configured benchmark file is present and loads."""
    from sent.errors import SentError
    from sent.evaluation import benchmark_path, load_benchmark

    toy_dir = cfg.toy.data_dir if cfg.toy is not None else None
    sizes = []
    for name in cfg.evaluation.benchmarks:
        try:
            path = benchmark_path(name, cfg.evaluation.data_dir, toy_dir)
            if not path.is_file():
                return Finding(
                    "benchmarks",
                    "fail",
                    f"{name}: {path} does not exist: `sent data fetch` writes it (evaluation.data_dir)",
                )
            sizes.append(f"{name} {len(load_benchmark(path))}")
        except (SentError, OSError, ValueError) as exc:
            return Finding("benchmarks", "fail", f"{name}: {exc}")
    return Finding("benchmarks", "ok", ", ".join(sizes) + " problems")


def _backends(cfg: SentConfig) -> set[str]:
    return {cfg.sampling.backend, cfg.evaluation.backend or cfg.sampling.backend}


def check_packages(cfg: SentConfig, version: Callable[[str], str | None] = _version) -> Finding:
    """The packages the config's engines need, in versions that work together."""
    found = {p: version(p) for p in ("torch", "transformers", "vllm", "verl", "ray")}
    problems = []
    if "vllm" in _backends(cfg) and found["vllm"] is None:
        problems.append("the vllm backend needs vLLM (pip install 'vllm==0.24.*', or run in .venv-verl)")
    if cfg.sampling.executor == "ray":
        if found["ray"] is None:
            problems.append("sampling.executor: ray needs Ray (pip install 'ray[data]')")
        elif "vllm" in _backends(cfg) and not _has_module("ray.data.llm"):
            problems.append(f"Ray {found['ray']} has no ray.data.llm: pip install 'ray[data,llm]'")
    if cfg.training.engine == "verl":
        if found["verl"] is None:
            problems.append("training.engine: verl needs verl 0.9 (pip install 'verl==0.9.*', or use .venv-verl)")
        elif not found["verl"].startswith("0.9."):
            problems.append(f"verl {found['verl']} is installed; this project is built against verl 0.9")
        transformers = found["transformers"]
        if transformers and tuple(int(x) for x in transformers.split(".")[:2] if x.isdigit()) >= (5, 11):
            problems.append(f"transformers {transformers} is newer than verl 0.9 allows (<5.11)")
    listed = ", ".join(f"{p} {v}" for p, v in found.items() if v)
    if problems:
        return Finding("packages", "fail", "; ".join(problems) + f" (installed: {listed})")
    return Finding("packages", "ok", listed)


def gpus_needed(cfg: SentConfig) -> tuple[int, str]:
    """The most GPUs one phase of the config holds on one machine, and that phase."""
    from tasks.gpu import gpu_slots

    # counted as the config asks, not as this machine would resolve it: model.device: cuda on a
    # machine without CUDA is a GPU the run needs (and gpu_slots would refuse the device)
    pinned = cfg.model.device.startswith("cuda")
    as_asked = cfg.model_copy(update={"model": cfg.model.model_copy(update={"device": "cpu"})})
    need = {phase: max(gpu_slots(as_asked, phase), int(pinned)) for phase in PHASES}
    if cfg.training.engine == "verl" and need["train"]:
        need["train"] = cfg.training.verl.n_gpus_per_node  # per machine: the other nodes bring theirs
    phase = max(need, key=lambda p: need[p])
    return need[phase], phase


def check_gpus(cfg: SentConfig, available: int | None = None) -> Finding:
    """CUDA and enough GPUs for the phase that needs the most."""
    need, phase = gpus_needed(cfg)
    if available is None:
        import torch

        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if need == 0:
        return Finding("gpus", "ok", f"the config runs on CPU ({available} GPUs here)")
    if available == 0:
        return Finding("gpus", "fail", f"{phase} needs {need} GPUs and this machine has no CUDA device")
    if available < need:
        return Finding("gpus", "fail", f"{phase} needs {need} GPUs, this machine has {available}")
    return Finding("gpus", "ok", f"{phase} needs {need} GPUs, this machine has {available}")


def check_gpu_limit(cfg: SentConfig, read_limit: Callable[[], int | None] | None = None) -> Finding:
    """With a Prefect server, its ``gpu`` concurrency limit exists and holds the largest phase."""
    from tasks.gpu import GPU_LIMIT, gpu_limit, server_configured

    need, phase = gpus_needed(cfg)
    if read_limit is None:
        if not server_configured():
            return Finding("gpu limit", "ok", "no Prefect server configured (a temporary one, no limit)")
        read_limit = gpu_limit
    if need == 0:
        return Finding("gpu limit", "ok", "the config takes no GPU slot")
    try:
        limit = read_limit()
    except Exception as exc:  # the server's reason is the finding
        return Finding("gpu limit", "fail", f"the Prefect server cannot be asked ({exc})")
    if limit is None:
        return Finding(
            "gpu limit",
            "fail",
            f"no {GPU_LIMIT!r} concurrency limit: prefect gcl create {GPU_LIMIT} --limit <GPUs of the work pool>",
        )
    if limit < need:
        return Finding(
            "gpu limit",
            "fail",
            f"{phase} holds {need} slots but {GPU_LIMIT!r} has {limit}: prefect gcl update {GPU_LIMIT} --limit {need}",
        )
    return Finding("gpu limit", "ok", f"{GPU_LIMIT!r} has {limit} slots; {phase} holds {need}")


def check_tracking(cfg: SentConfig) -> Finding:
    """The MLflow store: a server that answers, or a database file that can be written."""
    from sent.errors import SentError
    from sent.redaction import redact_uri
    from sent.tracking import check_reachable, resolve_tracking_uri

    try:
        uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
        check_reachable(uri)
    except SentError as exc:
        return Finding("tracking", "fail", str(exc))
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        while not folder.exists():
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            return Finding("tracking", "fail", f"{redact_uri(uri)}: {folder} is not writable")
    return Finding("tracking", "ok", redact_uri(uri))


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _weights_bytes(model: Path) -> int | None:
    files = [p for p in model.glob("*") if p.suffix in (".safetensors", ".bin", ".pt")] if model.is_dir() else []
    return sum(p.stat().st_size for p in files) or None


def _input_rows(cfg: SentConfig) -> int | None:
    """The training file's rows (Parquet metadata, or JSONL lines); None when unknown."""
    path = Path(cfg.data.train_path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if path.suffix == ".jsonl":
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
    except OSError:
        return None
    return None


def checkpoint_bytes(cfg: SentConfig, weights: int, rows: int | None = None) -> int:
    """The disk a training run needs at its peak: each stage's final weights, plus the newest
    checkpoint and the one being written (the local engine keeps one), or, on verl, every
    ``save_every`` checkpoint of a stage and its last (verl keeps them all). A stage's steps are
    estimated from ``rows`` input problems shared evenly by the stages (curation drops some, so
    this is an upper bound), or taken as one an epoch when the rows are unknown."""
    per_checkpoint = CHECKPOINT_FACTOR * weights
    n_stages = cfg.curriculum.n_stages
    finals = n_stages * weights
    if cfg.training.engine != "verl":
        return finals + 2 * per_checkpoint
    per_epoch = math.ceil(rows / n_stages / cfg.training.train_batch_size) if rows else 1
    steps = math.floor(per_epoch * cfg.training.epochs_per_stage)
    kept = steps // cfg.training.save_every + 1
    return finals + n_stages * kept * per_checkpoint


def check_disk(cfg: SentConfig, where: Path = Path("data")) -> Finding:
    """Free disk where runs are written, against the checkpoints a run keeps."""
    weights = _weights_bytes(Path(cfg.model.path).expanduser())
    existing = where
    while not existing.exists():
        existing = existing.parent if existing.parent != existing else Path(".")
    free = shutil.disk_usage(existing.resolve()).free
    if weights is None:
        return Finding("disk", "warn", f"{_size(free)} free at {existing}; the model's size is unknown here")
    need = checkpoint_bytes(cfg, weights, _input_rows(cfg))
    text = f"{_size(free)} free at {existing}, checkpoints need about {_size(need)}"
    if free < need:
        return Finding("disk", "fail", text + ": free space, or write the runs elsewhere")
    if free < 2 * need:
        return Finding("disk", "warn", text + " (less than twice that)")
    return Finding("disk", "ok", text)


CHECKS: tuple[Callable[[SentConfig], Finding], ...] = (
    check_model,
    check_training_data,
    check_benchmarks,
    check_packages,
    check_gpus,
    check_gpu_limit,
    check_tracking,
    check_disk,
)


def diagnose(cfg: SentConfig) -> list[Finding]:
    """Every check, in order; a check that raises is a failure that names the exception."""
    findings = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            findings.append(check(cfg))
        except Exception as exc:  # one broken check must not hide the others
            findings.append(Finding(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings
