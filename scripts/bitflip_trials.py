"""Flip random bytes in resumable state, then rerun: is damaged state ever read as good?

Beside `kill_trials.py` (same tiny world and settings). Two kinds of trial:

- curation: kill -9 a curation once its second chunk is written, flip 1 to 4 random bits of one
  random part (``samples/part-*.parquet``), rerun.
- training: kill -9 a stage at a random point, flip 1 to 4 random bits of one random file of its
  newest checkpoint, rerun to the end.

A rerun passes when it recomputes the damaged piece (its outputs are then identical to the
uninterrupted run's: every Parquet file of the curation by sha256; the stage's curve and final
weights) or refuses with an error line that names the damaged file. It fails when it exits 0
with other outputs (damaged data read as good) or fails any other way.

    python scripts/bitflip_trials.py [--trials 5] [--seed 0] [--workdir DIR]

Prints one line per trial and a summary; exits 1 if any trial fails.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_trials import SENT, curation_outputs, run, toy_commands, training_outputs


def flip_bits(path: Path, rng: random.Random) -> list[int]:
    """Flip 1 to 4 random bits of ``path`` in place; the byte offsets flipped."""
    data = bytearray(path.read_bytes())
    offsets = sorted(rng.sample(range(len(data)), k=min(len(data), rng.randint(1, 4))))
    for at in offsets:
        data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return offsets


def rerun(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def resumed_from(log: str) -> str:
    """The checkpoint a stage's rerun resumed from, as its log names it."""
    found = re.findall(r"resumed from \S*/(step-\d+)", log)
    return found[-1] if found else "no checkpoint"


def verdict(done: subprocess.CompletedProcess, damaged: Path, identical) -> tuple[bool, str]:
    """(passed, what happened) for a rerun after ``damaged`` was changed."""
    if done.returncode == 0:
        source = f"resumed from {resumed_from(done.stderr)}" if damaged.parent.name.startswith("step-") else "resampled"
        if identical():
            return True, f"recomputed ({source}), outputs identical"
        if damaged.parent.name.startswith("step-") and resumed_from(done.stderr) != damaged.parent.name:
            # the damaged checkpoint was passed over; what differs is the resumed run's arithmetic
            return True, f"recomputed ({source}), but the curve differs from the uninterrupted run's: {identical.why()}"
        return False, f"OUTPUTS DIFFER ({source}; damaged {damaged.parent.name})"
    last = (done.stderr.strip().splitlines() or [""])[-1]
    named = last.startswith("error: ") and damaged.name in last
    return (named, f"refused: {last[:160]}") if named else (False, f"FAILED OTHERWISE: {last[:200]}")


class SameTraining:
    """Whether a stage's curve and final weights are the reference's; if not, by how much."""

    def __init__(self, reference: tuple[list[dict], str], out: Path) -> None:
        self.reference, self.out = reference, out

    def __call__(self) -> bool:
        return training_outputs(self.out / "stage-1") == self.reference

    def why(self) -> str:
        curve, weights = training_outputs(self.out / "stage-1")
        gaps = [
            (abs(a[k] - b[k]) / max(abs(a[k]), 1e-12), int(a["step"]), k)
            for a, b in zip(self.reference[0], curve, strict=True)
            for k in a
            if isinstance(a[k], float) and isinstance(b.get(k), float) and a[k] != b[k]
        ]
        worst = max(gaps, default=(0.0, 0, "-"))
        first = min(gaps, key=lambda g: g[1], default=(0.0, 0, "-"))
        return (
            f"from step {first[1]}, largest relative gap {worst[0]:.1e} ({worst[2]} at step {worst[1]}); "
            f"weights {'identical' if weights == self.reference[1] else 'differ'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips and kill points")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work, config, curate = toy_commands(args.workdir, "sent-bitflip-trials-")
    failures = 0

    ref_cur = work / "curate-ref"
    seconds = run([*curate, "--out", str(ref_cur)])
    reference = curation_outputs(ref_cur)
    print(f"curation reference: {seconds:.1f} s, {len(reference)} Parquet files")
    for i in range(args.trials):
        out = work / f"curate-{i}"
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen([*curate, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sealed = out / "samples" / ".part-00001.parquet.sha256"
        while not sealed.exists() and proc.poll() is None:  # interrupted once two chunks are written
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        if (out / "manifest.json").exists():
            (out / "manifest.json").unlink()  # it finished first: made unfinished again
        part = rng.choice(sorted((out / "samples").glob("part-*.parquet")))
        offsets = flip_bits(part, rng)
        done = rerun([*curate, "--out", str(out)])
        ok, what = verdict(done, part, lambda o=out: curation_outputs(o) == reference)
        failures += not ok
        print(f"  curation trial {i}: {part.name} bits at {offsets}: {what}")

    # 12 steps (stage 1 four times as long as the kill trials'), so that a kill lands between checkpoints
    train = [*SENT, "train", *config, "training.epochs_per_stage=16", "--stage", "1", "--curriculum", str(ref_cur)]
    train += ["--max-steps", "12"]
    seconds = run([*train, "--out", str(work / "train-ref")])
    reference_train = training_outputs(work / "train-ref" / "stage-1")
    print(f"training reference: {seconds:.1f} s, {len(reference_train[0])} steps, a checkpoint after each")
    done_trials = 0
    for i in range(args.trials * 6):  # a kill that lands before the first checkpoint or after the end is redrawn
        if done_trials == args.trials:
            break
        out = work / f"train-{i}"
        proc = subprocess.Popen([*train, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.5, 0.95) * seconds)
            continue  # finished first: nothing to damage
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        checkpoints = sorted((out / "stage-1" / "checkpoints").glob("step-*"))
        if not checkpoints or (out / "stage-1" / "final").exists():
            continue
        files = sorted(p for p in checkpoints[-1].rglob("*") if p.is_file())
        target = rng.choice(files)
        offsets = flip_bits(target, rng)
        done = rerun([*train, "--out", str(out)])
        ok, what = verdict(done, target, SameTraining(reference_train, out))
        failures += not ok
        done_trials += 1
        print(f"  training trial {done_trials - 1}: {checkpoints[-1].name}/{target.name} bits at {offsets}: {what}")
    total = args.trials + done_trials
    print(f"{total - failures} of {total} trials recomputed or refused the damaged file ({work})")
    summary = {"trials": total, "failures": failures, "workdir": str(work)}
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
