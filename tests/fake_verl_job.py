"""A FAKE of verl's trainer (`python -m verl.trainer.main_ppo`) and model merger
(`python -m verl.model_merger merge`), kept only for the shape that needs GPUs: the pipeline's
verl stages on CUDA, which hold a slot of the Prefect `gpu` limit (tests/flows/test_pipeline.py).
Everything verl's real trainer can do on CPU is tested on it instead (tests/engines/test_verl_real.py).
It reads the Hydra overrides it is given, prints step lines in the format of verl's console logger,
writes verl's checkpoint layout (global_step_N/actor + latest_checkpointed_iteration.txt) and, as the
"merger", copies the stage's start model as the merged weights. It records its arguments and
environment in <default_local_dir>/fake_job.json for the tests to inspect.
Set FAKE_VERL_FAIL=1 to make the trainer fail after two steps."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def _overrides(argv: list[str]) -> dict[str, str]:
    return {k.lstrip("+"): v.strip('"') for k, _, v in (a.partition("=") for a in argv)}


def train(argv: list[str]) -> int:
    o = _overrides(argv)
    out = Path(o["trainer.default_local_dir"].strip('"'))
    steps = int(o.get("trainer.total_training_steps", "2"))
    out.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    (out / "fake_job.json").write_text(json.dumps({"overrides": o, "env": env}))
    for step in range(1, steps + 1):
        metrics = {"actor/pg_loss": 0.5 / step, "actor/entropy": 1.0 - 0.1 * step, "critic/score/mean": 0.25}
        print(f"step:{step} - " + " - ".join(f"{k}:{v:.4f}" for k, v in metrics.items()))
        if step == 2 and os.environ.get("FAKE_VERL_FAIL"):
            print("RuntimeError: CUDA out of memory (fake)", flush=True)
            return 1
    actor = out / f"global_step_{steps}" / "actor"
    actor.mkdir(parents=True, exist_ok=True)
    (actor / "start_model.txt").write_text(o["actor_rollout_ref.model.path"])
    (out / "latest_checkpointed_iteration.txt").write_text(str(steps))
    return 0


def merge(argv: list[str]) -> int:
    args = dict(zip(argv[1::2], argv[2::2], strict=False))
    start = Path((Path(args["--local_dir"]) / "start_model.txt").read_text())
    shutil.copytree(start, args["--target_dir"], ignore=shutil.ignore_patterns("stage.json"))
    return 0


if __name__ == "__main__":
    sys.exit(merge(sys.argv[1:]) if sys.argv[1:2] == ["merge"] else train(sys.argv[1:]))
