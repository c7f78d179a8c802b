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
