"""Stage assignment for 1M problems. Target (issue 2): <= 1 s.

SE at N = 8 takes few distinct values (heavy ties), so the input mixes tied and continuous values.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds

from sent.curriculum import assign_stages

N = 1_000_000


def main() -> None:
    rng = np.random.default_rng(0)
    discrete = np.log(rng.integers(1, 9, size=N // 2))  # ties, as discrete SE gives
    continuous = rng.random(N - N // 2) * np.log(8)  # weighted SE
    x = np.concatenate([discrete, continuous])
    rng.shuffle(x)
    for k in (2, 5):
        t = median_seconds(lambda k=k: assign_stages(x, n_stages=k), repeat=5, warmup=1)
        print(f"quantile, K = {k}, {N:,} problems: {t:.3f} s")
    t = median_seconds(lambda: assign_stages(x, n_stages=3, method="threshold", thresholds=[0.5, 1.2]), repeat=5)
    print(f"threshold, K = 3, {N:,} problems: {t:.3f} s")


if __name__ == "__main__":
    main()
