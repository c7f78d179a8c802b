"""Plots of a pipeline run: curation, training curves across stages, evaluation (matplotlib Agg, PNG)."""

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


def plot_training(histories: dict[int, list[dict[str, float]]], path: Path) -> Path:
    """Reward, accuracy and policy entropy per step, stages laid end to end (dashed lines between them)."""
    plt = _pyplot()
    panels = [("reward_mean", "reward"), ("accuracy", "accuracy"), ("policy_entropy", "policy entropy (nats)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    offset = 0
    for stage in sorted(histories):
        rows = histories[stage]
        steps = [offset + i + 1 for i in range(len(rows))]
        for ax, (key, _) in zip(axes, panels, strict=True):
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=f"stage {stage}")
            if offset:
                ax.axvline(offset + 0.5, color="grey", linestyle="--", linewidth=0.8)
        offset += len(rows)
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xlabel("step (all stages)")
        ax.set_title(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_evaluation(results: dict[str, dict[str, dict[str, float]]], metric: str, path: Path) -> Path:
    """Bars of one metric per benchmark, one bar per evaluated model (``results[model][benchmark]``)."""
    plt = _pyplot()
    models = list(results)
    benchmarks = sorted({b for per in results.values() for b in per})
    width = 0.8 / max(1, len(models))
    x = np.arange(len(benchmarks))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(benchmarks) + 2), 3.6))
    for i, model in enumerate(models):
        values = [100 * results[model].get(b, {}).get(metric, float("nan")) for b in benchmarks]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=model)
    ax.set_xticks(x, benchmarks)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric} by benchmark")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
