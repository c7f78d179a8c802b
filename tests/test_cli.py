"""The `sent` command line."""

from __future__ import annotations

import json

import pytest

from sent.cli import main


def test_grade_exit_code_and_json(capsys):
    assert main(["grade", "--response", "so \\boxed{0.5}", "--answer", "\\frac{1}{2}"]) == 0
    assert json.loads(capsys.readouterr().out) == {"score": 1.0, "acc": True, "pred": "0.5", "undecided": False}
    assert main(["grade", "--response", "so \\boxed{2}", "--answer", "3", "--incorrect-score", "0"]) == 1
    assert json.loads(capsys.readouterr().out)["score"] == 0.0


def test_se(capsys):
    assert main(["se", "4", "4.0", "5", ""]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == [0, 0, 1, 2] and out["n_classes"] == 3


def test_prefect_errors_become_advice():
    from sent.flow_calls import prefect_unavailable

    unreachable = RuntimeError("Failed to reach API at http://127.0.0.1:9/api/")
    assert "prefect server start" in prefect_unavailable(unreachable)
    slow = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server. stdout: ...")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in prefect_unavailable(slow)
    assert prefect_unavailable(RuntimeError("something else")) is None  # other errors keep their traceback


# Every error a user can cause, with the built-in base it kept (so `except ValueError` still works).
USER_ERRORS = [
    ("sent.ablation", "AblationError", ValueError),
    ("sent.config_base", "ConfigError", ValueError),
    ("sent.problems", "CurationError", RuntimeError),
    ("sent.data_contract", "ContractError", ValueError),
    ("sent.engines.stage", "TrainingError", RuntimeError),
    ("sent.engines.verl", "VerlEngineError", RuntimeError),
    ("sent.engines.verl_cpu", "VerlCpuError", RuntimeError),
    ("sent.engines.verl_plugin", "UnsupportedVerlError", RuntimeError),
    ("sent.evaluation", "EvaluationError", ValueError),
    ("sent.data_sources", "SourceError", ValueError),
    ("sent.locks", "LockedError", RuntimeError),
    ("sent.models", "ModelNotFoundError", OSError),
    ("sent.models", "ModelError", RuntimeError),
    ("sent.ray_address", "RayAddressError", ConnectionError),
    ("sent.sampling.pieces", "RayExecutorError", RuntimeError),
    ("sent.steps", "StepError", RuntimeError),
    ("sent.tracking", "TrackingError", RuntimeError),
    ("tasks.gpu", "GpuLimitError", RuntimeError),
]


def _error_class(module: str, name: str) -> type[Exception]:
    import importlib

    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("module", "name", "builtin"), USER_ERRORS, ids=[e[1] for e in USER_ERRORS])
def test_a_user_error_prints_its_message_on_one_line_and_exits_2(monkeypatch, capsys, module, name, builtin):
    import sent.cli
    from sent.errors import SentError

    error = _error_class(module, name)
    assert issubclass(error, SentError) and issubclass(error, builtin)

    def refuse(_args):
        raise error("input.jsonl row 3: field 'answer' is empty; fill it or drop the row")

    monkeypatch.setattr(sent.cli, "_cmd_grade", refuse)
    assert main(["grade", "--response", "x", "--answer", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: input.jsonl row 3: field 'answer' is empty; fill it or drop the row\n"


def test_every_error_class_in_the_package_is_a_sent_error():
    """A new ``class XError(...)`` in sent/ or tasks/ must derive from SentError (or be listed above)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    declared = {
        (str(path.relative_to(root).with_suffix("")).replace("/", "."), m.group(1))
        for folder in ("sent", "tasks", "flows")
        for path in (root / folder).rglob("*.py")
        for m in re.finditer(r"^class (\w+Error)\(", path.read_text(encoding="utf-8"), re.M)
    }
    assert declared - {("sent.errors", "SentError")} == {(module, name) for module, name, _ in USER_ERRORS}


def test_help_imports_no_heavy_library():
    """`sent --help` answers at once: no torch, MLflow or Prefect (the commands import what they use)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys\nfrom sent.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'prefect', 'pyarrow', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
