"""kill -9 at random points, then rerun: does the work resume to the uninterrupted result?

For curation (the local loop, or ``--only curate-ray``: the Ray executor with one sampler actor on
a local Ray), for one training stage, and (``--only ablate``) for a two-arm ablation through its
Prefect flow, on a tiny toy world built here (about a minute):

1. one uninterrupted run, the reference;
2. N trials: start the same command in a fresh directory, SIGKILL it after a random delay drawn
   uniformly over the reference's duration, rerun it to completion (resuming whatever the killed
   run left), and compare with the reference:
   - curation: rows in = accepted + rejected, and every output Parquet file (samples, scores,
     rejected rows, curriculum shards) byte-identical to the reference's (by sha256);
   - training: the per-step curve (every metric but timings) and the final weights identical;
   - ablation: every Parquet file (curation, evaluations), every stage's curve and final weights,
     and the summary's metrics identical (each run with its own Prefect home and MLflow store).

    python scripts/kill_trials.py [--trials 5] [--seed 0] [--workdir DIR]

Prints one line per trial and a summary; exits 1 if any trial differs. Run it alone: the timings
of a loaded machine only move the kill points.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENT = [sys.executable, "-m", "sent.cli"]


def build_world(work: Path) -> tuple[Path, Path]:
    """The tests' tiny world (`sent.toy.tiny`), built in ``work``: its model and RL split."""
    from sent.toy.tiny import build_tiny_world

    result = build_tiny_world(work)
    return Path(result.model_dir), Path(result.rl_path)


def overrides(model: Path, data: Path) -> list[str]:
    return [
        f"model.path={model}",
        f"data.train_path={data}",
        "data.data_source=toy",
        "data.max_prompt_tokens=128",
        "sampling.n=4",
        "sampling.max_new_tokens=32",
        "sampling.chunk_size=8",
        "curriculum.shard_rows=8",
        "training.group_size=4",
        "training.train_batch_size=4",
        "training.mini_batch_size=4",
        "training.epochs_per_stage=4",  # stage 1 of these 48 problems: 8 or more steps, 6 are run
        "training.micro_batch_size=32",
        "training.max_prompt_tokens=128",
        "training.max_response_tokens=32",
        "training.ref_kl_coef=0",
        "training.save_every=1",
        "training.lr=1e-4",
    ]


def toy_commands(workdir: Path | None, prefix: str) -> tuple[Path, list[str], list[str]]:
    """The trials' directory (``workdir`` or a new temporary one), with the tiny world built in it,
    its ``sent`` config arguments and its curation command."""
    work = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    model, data = build_world(work)
    config = ["--config", str(ROOT / "configs" / "toy.yaml"), *overrides(model, data)]
    return work, config, [*SENT, "curate", *config, "--limit", "48"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def curation_outputs(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*.parquet"))}


def ablation_outputs(out: Path) -> dict[str, object]:
    """What an ablation must reproduce: its Parquet files, each stage's curve and weights, and the
    summary's metrics (its files also hold timings and run ids, which differ by nature)."""
    found: dict[str, object] = {f"file {k}": v for k, v in curation_outputs(out).items()}
    for stage in sorted(out.glob("runs/*/seed-*/stage-*")):
        curve, weights = training_outputs(stage)
        found[f"curve {stage.relative_to(out)}"] = curve
        found[f"weights {stage.relative_to(out)}"] = weights
    summary = json.loads((out / "ablation.json").read_text())
    found["summary"] = json.dumps(summary.get("arms", summary), sort_keys=True)
    return found


def training_outputs(stage: Path) -> tuple[list[dict], str]:
    """A stage's curve (every metric but timings) and the digest of its final weights."""
    from sent.engines.step_metrics import is_timing

    curve = [
        {k: v for k, v in json.loads(line).items() if not is_timing(k)}
        for line in (stage / "metrics.jsonl").read_text().splitlines()
    ]
    weights = hashlib.sha256(b"".join(sha256(p).encode() for p in sorted((stage / "final").glob("*.safetensors"))))
    return curve, weights.hexdigest()


def isolated(work: Path, name: str) -> dict[str, str]:
    """The environment of one ablation (its killed run and its rerun): its own Prefect home and
    MLflow store, so that no cache of another run is found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    home = work / f"{name}-services"
    home.mkdir(parents=True, exist_ok=True)
    env.update(PREFECT_HOME=str(home / "prefect"), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    return env


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800, env=env)
    return time.monotonic() - t0


def ray_stop() -> None:
    """Stop what a killed driver's local Ray left behind (a machine that died would have none)."""
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True, timeout=120)


def killed_then_rerun(cmd: list[str], delay: float, between=None, env: dict[str, str] | None = None) -> bool:
    """Start ``cmd``, SIGKILL it after ``delay`` s (False if it finished first), call ``between``,
    then rerun it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        killed = True
    if between is not None:
        between()
    run(cmd, env)
    return killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory)")
    parser.add_argument(
        "--only",
        choices=["curate", "curate-ray", "train", "ablate"],
        help="one kind of trial (default: curate and train)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work, config, curate = toy_commands(args.workdir, "sent-kill-trials-")
    failures = 0

    if args.only == "ablate":  # two arms (one stage; two stages) through the Prefect flow
        ablate = [
            *SENT, "ablate", *config, "--arms", "grpo,sent", "--seeds", "0", "data.limit=48",
            "curriculum.drop_zero_signal=false", "training.epochs_per_stage=1",
            "evaluation.limit=8", "evaluation.n=2", "evaluation.k=[1,2]",
        ]  # fmt: skip
        ref = work / "ablate-ref"
        seconds = run([*ablate, "--out", str(ref)], isolated(work, "ablate-ref"))
        reference_ablation = ablation_outputs(ref)
        print(f"ablation reference: {seconds:.1f} s, {len(reference_ablation)} outputs compared")
        for i in range(args.trials):
            out = work / f"ablate-{i}"
            delay = rng.uniform(0.2, 1.0) * seconds
            killed = killed_then_rerun([*ablate, "--out", str(out)], delay, env=isolated(work, f"ablate-{i}"))
            got = ablation_outputs(out)
            keys = reference_ablation.keys() | got.keys()
            differing = sorted(k for k in keys if got.get(k) != reference_ablation.get(k))
            failures += bool(differing)
            print(
                f"  ablation trial {i}: kill -9 at {delay:5.1f} s ({'killed' if killed else 'finished first'}); "
                f"outputs identical {not differing}" + (f" (differ: {', '.join(differing[:5])})" if differing else "")
            )
        print(f"{args.trials - failures} of {args.trials} trials identical to the uninterrupted run ({work})")
        return 1 if failures else 0

    ref_cur = work / "curate-ref"
    seconds = run([*curate, "--out", str(ref_cur)])
    reference = curation_outputs(ref_cur)
    counts = json.loads((ref_cur / "manifest.json").read_text())["counts"]
    print(f"curation reference: {seconds:.1f} s, {len(reference)} Parquet files, counts {counts}")
    for i in range(args.trials if args.only in (None, "curate") else 0):
        out = work / f"curate-{i}"
        delay = rng.uniform(0.2, 1.0) * seconds
        killed = killed_then_rerun([*curate, "--out", str(out)], delay)
        got = json.loads((out / "manifest.json").read_text())["counts"]
        conserved = got["input_rows"] == got["accepted"] + got["rejected"]
        same = curation_outputs(out) == reference and conserved
        failures += not same
        print(
            f"  curation trial {i}: kill -9 at {delay:5.1f} s ({'killed' if killed else 'finished first'}); "
            f"rows conserved {conserved}; outputs identical {same}"
        )

    if args.only == "curate-ray":  # the Ray executor: one sampler actor on a local Ray, started per run
        ray = [*curate, "sampling.executor=ray", "ray.replicas=1", "ray.cpus_per_actor=1"]
        ref_ray = work / "curate-ray-ref"
        seconds = run([*ray, "--out", str(ref_ray)])
        ray_stop()
        reference = curation_outputs(ref_ray)
        print(f"Ray curation reference: {seconds:.1f} s, {len(reference)} Parquet files")
        for i in range(args.trials):
            out = work / f"curate-ray-{i}"
            delay = rng.uniform(0.2, 1.0) * seconds
            killed = killed_then_rerun([*ray, "--out", str(out)], delay, between=ray_stop)
            same = curation_outputs(out) == reference
            failures += not same
            print(
                f"  Ray curation trial {i}: kill -9 at {delay:5.1f} s ({'killed' if killed else 'finished first'}); "
                f"outputs identical {same}"
            )
        print(f"{args.trials - failures} of {args.trials} trials identical to the uninterrupted run ({work})")
        return 1 if failures else 0

    train = [*SENT, "train", *config, "--stage", "1", "--curriculum", str(ref_cur), "--max-steps", "6"]
    seconds = run([*train, "--out", str(work / "train-ref")])
    reference_train = training_outputs(work / "train-ref" / "stage-1")
    print(f"training reference: {seconds:.1f} s, {len(reference_train[0])} steps, a checkpoint after each")
    for i in range(args.trials if args.only != "curate" else 0):
        out = work / f"train-{i}"
        delay = rng.uniform(0.2, 1.0) * seconds
        killed = killed_then_rerun([*train, "--out", str(out)], delay)
        same = training_outputs(out / "stage-1") == reference_train
        failures += not same
        print(
            f"  training trial {i}: kill -9 at {delay:5.1f} s ({'killed' if killed else 'finished first'}); "
            f"curve and weights identical {same}"
        )
    total = args.trials * (1 if args.only else 2)
    print(f"{total - failures} of {total} trials identical to the uninterrupted run ({work})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
