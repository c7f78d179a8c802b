"""The policy loss's share of verl's ``update_actor`` time, SENT against KL-Cov, on verl's real
trainer on CPU (configs/toy-verl.yaml, stage 1; curated first when it is not). Needs .venv-verl
(`make setup-verl`); from another environment it says so and exits.

Runs one stage per loss, one after the other (``--steps`` verl steps each; verl's own
``timing_s/update_actor`` and our plugin's ``actor/loss_seconds``, the loss's own time summed over a
step's micro-batches), and prints per step and the medians of the steps after the first. KL-Cov is
our ``kl_cov`` (parity-tested against verl's own). Run alone: a second process doubles the times.

    .venv-verl/bin/python benchmarks/bench_verl_loss_share.py [--steps 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toy-verl.yaml"


SENT = Path(sys.executable).with_name("sent")


def run_stage(loss: str, steps: int, out: Path) -> list[dict]:
    command = [str(SENT), "train", "--config", str(CONFIG), "--stage", "1", "--max-steps", str(steps)]
    command += ["--out", str(out), f"training.loss={loss}"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(x) for x in (out / "stage-1" / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if importlib.util.find_spec("vllm") is None:
        print("skipped: verl's real trainer needs .venv-verl (make setup-verl); run it with .venv-verl/bin/python")
        return
    from sent.config_loading import load_config
    from sent.curate import default_out_dir

    cfg = load_config(CONFIG)
    if not (ROOT / default_out_dir(cfg, cfg.data.limit) / "manifest.json").is_file():
        subprocess.run([str(SENT), "curate", "--config", str(CONFIG)], check=True, cwd=ROOT)
    out = args.out or Path(tempfile.mkdtemp(prefix="verl-loss-share-"))
    medians = {}
    for loss in ("sent", "kl_cov"):
        rows = run_stage(loss, args.steps, out / loss)
        print(f"{loss}: step  update_actor_s  loss_s  share")
        shares, loss_s = [], []
        for r in rows:
            update, spent = r["timing_s/update_actor"], r["actor/loss_seconds"]
            share = spent / update
            print(f"  {int(r['step']):4d}  {update:14.2f}  {spent:6.3f}  {share:5.1%}")
            if r["step"] > 1:
                shares.append(share)
                loss_s.append(spent)
        medians[loss] = (statistics.median(loss_s), statistics.median(shares))
        spent, share = medians[loss]
        print(f"  median over steps 2-{args.steps}: loss {spent:.3f} s, {share:.1%} of update_actor")
    ratio = medians["sent"][0] / medians["kl_cov"][0]
    print(f"sent/kl_cov loss time inside verl's update_actor: {ratio:.2f}x")


if __name__ == "__main__":
    main()
