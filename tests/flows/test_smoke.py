"""The fast tier's pass through every flow and task: the ablation and pipeline flows at their
smallest on the tiny world, under the real Prefect engine with a real MLflow store. The slow flow
tests check what these runs make (caching, resume, lineage, numbers); this one that every step
runs end to end in `make test-fast` and writes its artefact."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sent_testing import pipeline_config, prefect_harness


def test_every_flow_step_runs_at_its_smallest(tiny_toy, tmp_path, monkeypatch):
    from flows.ablation import sent_ablation
    from flows.curate import sent_curate
    from flows.pipeline import sent_pipeline

    raw = pipeline_config(
        tiny_toy,
        data={"limit": 16},
        curriculum={"mode": "rescored"},
        evaluation={"limit": 4},
    )
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with prefect_harness(tmp_path / "prefect-results"):
        # the ablation flow: bootstrap (cached), curate, eval:base, restage, train:1, rescore:1,
        # train:2, eval and the report, for one arm and one seed
        summary = sent_ablation(
            config="smoke.yaml", out="data/runs/abl", arms=["sent_rescored"], seeds=[0], reference="sent_rescored"
        )
        run = Path("data/runs/abl/runs/sent_rescored/seed-0")
        assert summary["arms"]["sent_rescored"]["seeds"] == [0] and not summary["missing"]
        assert (run / "rescore-1" / "manifest.json").is_file() and (run / "eval-final" / "results.json").is_file()
        assert Path("data/runs/abl/ablation.md").is_file()
        # the pipeline flow, and a phase's own flow (the curation is the ablation's, cached)
        record = sent_pipeline(config="smoke.yaml", steps=["curate", "train:1", "eval:base", "eval"])
        assert record["status"] == "finished"
        out = Path(record["run_dir"])
        assert json.loads((out / "run.json").read_text())["steps"] == ["curate", "train:1", "eval:base", "eval"]
        assert (out / "comparison.md").is_file() and (out / "stage-1" / "final" / "stage.json").is_file()
        curated = sent_curate(config="smoke.yaml")
        assert curated["artefacts"]["curate"]["path"] == record["artefacts"]["curate"]["path"]
