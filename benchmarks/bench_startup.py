"""Start-up time of the command line and of loading a config, each in a fresh interpreter.

Issue 15: loading a config must not import torch (`sent.loss_config` holds the loss
coefficients). Prints the median of fresh-process wall times, each against a bare ``python -c
pass`` measured in the same rounds, and the heavy modules each one imported. Run alone: on 2
cores a concurrent process inflates every figure.

    python benchmarks/bench_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "transformers", "prefect", "mlflow", "pyarrow", "polars")
PROBE = "\nimport sys; print(','.join(m for m in {heavy!r} if m in sys.modules))"
CASES = {
    "python -c pass": "pass",
    "sent --help": "import contextlib, io\nfrom sent.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
    "    try: main(['--help'])\n    except SystemExit: pass",
    "load configs/toy.yaml": "from sent.config_loading import load_config; "
    f"load_config({str(ROOT / 'configs/toy.yaml')!r})",
    "load a paper preset": "from sent.config_loading import load_config; "
    f"load_config({str(ROOT / 'configs/paper/r1-distill-qwen-1.5b.yaml')!r})",
}


def run(code: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code + PROBE.format(heavy=HEAVY)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return time.perf_counter() - t0, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    imported: dict[str, str] = {}
    run(CASES["load configs/toy.yaml"])  # warm the file cache
    for _ in range(args.rounds):  # interleaved: drift hits every case alike
        for name, code in CASES.items():
            seconds, imported[name] = run(code)
            times[name].append(seconds)
    base = statistics.median(times["python -c pass"])
    print(f"{'case':<24} {'median s':>9} {'minus bare python':>18}  heavy modules imported")
    for name in CASES:
        med = statistics.median(times[name])
        print(f"{name:<24} {med:9.3f} {med - base:18.3f}  {imported[name] or '-'}")


if __name__ == "__main__":
    main()
