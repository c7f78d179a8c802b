"""The `sent` command line."""

from __future__ import annotations

import json

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
    from sent.cli import prefect_unavailable

    unreachable = RuntimeError("Failed to reach API at http://127.0.0.1:9/api/")
    assert "prefect server start" in prefect_unavailable(unreachable)
    slow = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server. stdout: ...")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in prefect_unavailable(slow)
    assert prefect_unavailable(RuntimeError("something else")) is None  # other errors keep their traceback
