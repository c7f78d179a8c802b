"""Plots of a curation run (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curation(scores: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``se_histogram.png`` (SE coloured by stage) and ``se_vs_pass_rate.png``."""
    plt = _pyplot()
    kept = [r for r in scores if not r["filtered"]]
    paths = []
    se = np.array([r["semantic_entropy"] for r in kept])
    stages = np.array([r["stage"] for r in kept])
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(float(se.max()) if se.size else 1.0, 1e-6), 25)
    for stage in sorted(set(stages.tolist())):
        ax.hist(
            se[stages == stage],
            bins=bins,
            alpha=0.7,
            label=f"stage {stage} (n={int((stages == stage).sum())})",
        )
    ax.set_xlabel("semantic entropy (nats)")
    ax.set_ylabel("problems")
    ax.set_title("Semantic entropy by curriculum stage")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "se_histogram.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    pass_rate = np.array([r["pass_rate"] for r in kept])
    jitter = rng.uniform(-0.01, 0.01, size=pass_rate.shape)  # many problems share a pass rate at N = 8
    ax.scatter(pass_rate + jitter, se, s=6, alpha=0.4, c=stages, cmap="viridis")
    ax.set_xlabel("pass rate")
    ax.set_ylabel("semantic entropy (nats)")
    ax.set_title("Semantic entropy vs pass rate")
    fig.tight_layout()
    paths.append(out_dir / "se_vs_pass_rate.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
