"""The local GRPO engine on the toy model: step time, tokens/s, and the share of a step spent
sampling vs training (issue 4). Needs `sent toy bootstrap` and `sent curate --config configs/toy.yaml`.
Run alone: on 2 cores any concurrent process roughly doubles the step time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sent.config import load_config  # noqa: E402
from sent.curate import default_out_dir  # noqa: E402
from sent.engines.local import train_stage  # noqa: E402

STEPS = 6


def main() -> None:
    for loss in ("sent", "ppo_clip"):
        cfg = load_config(ROOT / "configs" / "toy.yaml", [f"training.loss={loss}"])
        curriculum = default_out_dir(cfg, cfg.data.limit)
        if not (curriculum / "manifest.json").is_file() or not Path(cfg.model.path).is_dir():
            print(f"skipped: run `sent toy bootstrap` and `sent curate --config configs/toy.yaml` first ({curriculum})")
            return
        with tempfile.TemporaryDirectory() as d:
            result = train_stage(
                cfg, stage=1, curriculum_dir=curriculum, run_dir=Path(d), max_steps=STEPS, progress=False
            )
        h = result.history[1:]  # the first step includes one-off warm-up
        step = np.mean([m["step_time"] for m in h])
        sampling = np.mean([m["sampling_time"] for m in h])
        tokens = np.mean([m["tokens_per_s"] for m in h])
        t = cfg.training
        print(
            f"{loss:>8}: {t.train_batch_size} prompts x G={t.group_size} per step: {step:5.2f} s/step, "
            f"{tokens:6.0f} response tokens/s, sampling {100 * sampling / step:4.1f} %, "
            f"training (old log-probs + updates) {100 * (step - sampling) / step:4.1f} %"
        )


if __name__ == "__main__":
    main()
