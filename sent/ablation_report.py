"""The ablation's report: what every finished arm x seed left, summarised per arm and in pairs.

- Per arm, each evaluation metric (avg@n, pass@n, maj@n) as the mean over seeds with a Student-t
  95 % interval (n_seeds - 1 degrees of freedom).
- Per arm, the paired difference from the reference arm in avg@n and in pass@n, per problem
  pooled over seeds (each problem's difference averaged over the seeds both arms ran, then a
  Student-t interval over problems, `sent.stats.pooled_paired_difference`), on all problems and
  on the trained levels.
- pass@k for every k of the evaluation, per arm and for the starting model, on all problems and
  on the trained levels (the unbiased estimator on each problem's correct count).
- The policy's diversity on held-out problems: the mean semantic entropy of a problem's n answers
  and its number of distinct answers (`sent.evaluation.AnswerSpread`).
- Token entropy: the first and last step, the lowest, the means of the first and last five steps
  and their ratio (`sent.entropy_fit.entropy_drop`), the curves of every arm on one plot, and the
  share of trained tokens each penalty touched.
- The entropy–performance fit ``R = -a exp(H) + b`` per arm, over the steps of all its seeds
  (`sent.entropy_fit`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sent.entropy_fit import entropy_drop, fit_entropy_performance

Key = tuple[str, str]
"""(benchmark, problem id)."""


@dataclass
class RunOutcome:
    """What one finished arm x seed left (or the starting model: no histories)."""

    arm: str
    seed: int
    results: dict[str, float]
    """The evaluation's mean over benchmarks: ``{"avg@8": 0.41, "pass@8": ..., "maj@8": ...}`` (shares)."""
    scores: dict[Key, float]
    """``{(benchmark, id): avg@n in points}``."""
    histories: list[list[dict[str, float]]]
    """Per stage, the per-step metrics."""
    counts: dict[Key, tuple[int, int]] = field(default_factory=dict)
    """``{(benchmark, id): (correct samples, samples)}`` (`sent.stats.problem_counts`)."""
    spread: dict[Key, tuple[float, int]] = field(default_factory=dict)
    """``{(benchmark, id): (semantic entropy of the answers, distinct answers)}``."""

    def pass_scores(self, k: int) -> dict[Key, float]:
        """pass@k of each problem, in points."""
        from sent.evaluation import pass_at_k

        return {key: 100 * pass_at_k(n, c, k) for key, (c, n) in self.counts.items() if k <= n}


def entropy_curve(histories: Sequence[Sequence[Mapping[str, float]]], metric: str = "policy_entropy") -> list[float]:
    """Policy entropy (or another per-step ``metric``) at every step, the stages end to end."""
    return [_float(m.get(metric)) for h in histories for m in h]


def _float(value: Any) -> float:
    """A metric read back from JSON: null (a step without the metric's input) is NaN."""
    return float("nan") if value is None else float(value)


def token_shares(histories: Sequence[Sequence[Mapping[str, float]]]) -> dict[str, float]:
    """The share of trained tokens that the loss penalised (SENT, KL-Cov, Clip-Cov) and selected
    (the 80/20 entropy mask trains only its selection), over the whole run; NaN where the loss
    does not report that count."""
    trained = sum(_float(m.get("n_trained_tokens", 0.0)) for h in histories for m in h)
    out = {}
    for key, name in (("n_penalised", "penalised_share"), ("n_selected", "selected_share")):
        counts = [_float(m[key]) for h in histories for m in h if key in m]
        out[name] = float(sum(counts) / trained) if counts and trained else float("nan")
    return out


def _interval(values: Sequence[float]) -> dict[str, float]:
    from sent.stats import mean_interval

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    iv = mean_interval(finite)
    return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}


def _mean_over(values: Mapping[Key, float], keys: Collection[Key] | None) -> float:
    chosen = [v for k, v in values.items() if keys is None or k in keys]
    return float(np.mean(chosen)) if chosen else float("nan")


def _pass_ks(results: Sequence[Mapping[str, float]]) -> list[int]:
    found = (re.fullmatch(r"pass@(\d+)", m) for r in results for m in r)
    return sorted({int(f.group(1)) for f in found if f})


def _outcome_rows(o: RunOutcome, ks: Sequence[int], trained: Collection[Key] | None) -> dict[str, float]:
    """One run's (or the start's) numbers that are averaged over seeds, in points or nats."""
    row = {f"pass@{k}": 100 * o.results.get(f"pass@{k}", float("nan")) for k in ks}
    if trained and o.counts:
        row.update({f"trained.pass@{k}": _mean_over(o.pass_scores(k), trained) for k in ks})
    for scope, keys in (("all", None), ("trained", trained)):
        if o.spread and (scope == "all" or keys):
            row[f"{scope}.se"] = _mean_over({k: v[0] for k, v in o.spread.items()}, keys)
            row[f"{scope}.distinct"] = _mean_over({k: float(v[1]) for k, v in o.spread.items()}, keys)
    return row


def summarise(
    outcomes: Sequence[RunOutcome],
    *,
    reference: str,
    n: int,
    trained_keys: set[Key] | None = None,
    arms: Sequence[str] | None = None,
    start: RunOutcome | None = None,
) -> dict[str, Any]:
    """The ablation's numbers as JSON-ready data (see the module docstring); ``start`` is the
    starting model's evaluation, for scale."""
    from sent.stats import pooled_paired_difference

    arms = list(arms) if arms is not None else list(dict.fromkeys(o.arm for o in outcomes))
    by_arm: dict[str, list[RunOutcome]] = {
        a: sorted((o for o in outcomes if o.arm == a), key=lambda o: o.seed) for a in arms
    }
    metrics = [f"avg@{n}", f"pass@{n}", f"maj@{n}"]
    ks = _pass_ks([o.results for o in outcomes])
    summary: dict[str, Any] = {
        "reference": reference,
        "n": n,
        "metrics": metrics,
        "ks": ks,
        "arms": {},
        "paired": {},
        "paired_pass": {},
    }
    if start is not None:
        summary["start"] = {m: 100 * start.results[m] for m in metrics if m in start.results}
        summary["start_rows"] = _outcome_rows(start, ks, trained_keys)
    for arm, runs in by_arm.items():
        entry: dict[str, Any] = {"seeds": [o.seed for o in runs]}
        for metric in metrics:
            entry[metric] = {
                **_interval([100 * o.results.get(metric, float("nan")) for o in runs]),
                "per_seed": {o.seed: 100 * o.results.get(metric, float("nan")) for o in runs},
            }
        rows = [_outcome_rows(o, ks, trained_keys) for o in runs]
        entry["rows"] = {key: _interval([r[key] for r in rows]) for key in (rows[0] if rows else {})}
        curves = [entropy_curve(o.histories) for o in runs]
        drops = [entropy_drop(c) for c in curves if c]
        entry["entropy_final"] = _interval([c[-1] for c in curves if c])
        entry["entropy_min"] = _interval([d.lowest for d in drops])
        entry["entropy_start"] = _interval([c[0] for c in curves if c])
        entry["entropy_start_window"] = _interval([d.start for d in drops])
        entry["entropy_end_window"] = _interval([d.end for d in drops])
        entry["entropy_ratio"] = _interval([d.ratio for d in drops])
        steps = [m for o in runs for h in o.histories for m in h]
        fit = fit_entropy_performance(
            [_float(m.get("policy_entropy")) for m in steps], [_float(m.get("accuracy")) for m in steps]
        )
        entry["fit"] = asdict(fit)
        shares = [token_shares(o.histories) for o in runs]
        for key in ("penalised_share", "selected_share"):
            entry[key] = _interval([100 * s[key] for s in shares])
        entry["steps"] = [sum(len(h) for h in o.histories) for o in runs]
        summary["arms"][arm] = entry
    reference_runs = by_arm.get(reference, [])
    for arm, runs in by_arm.items():
        if arm == reference or not runs or not reference_runs:
            continue
        for name, of in (("paired", lambda o: o.scores), ("paired_pass", lambda o: o.pass_scores(n))):
            ref_scores, scores = {o.seed: of(o) for o in reference_runs}, {o.seed: of(o) for o in runs}
            if not all(ref_scores.values()) or not all(scores.values()):
                continue  # pass scores need the correct counts
            groups = {"all": pooled_paired_difference(ref_scores, scores, group="all")}
            if trained_keys:
                groups["trained"] = pooled_paired_difference(ref_scores, scores, keys=trained_keys, group="trained")
            summary[name][arm] = {k: {**asdict(v), "excludes_zero": v.excludes_zero} for k, v in groups.items()}
    return summary


def _fmt(iv: Mapping[str, float], digits: int = 2) -> str:
    if not math.isfinite(iv["mean"]):
        return "–"
    if not math.isfinite(iv["ci_low"]):
        return f"{iv['mean']:.{digits}f}"
    half = (iv["ci_high"] - iv["ci_low"]) / 2
    return f"{iv['mean']:.{digits}f} ± {half:.{digits}f}"


def _paired_table(summary: Mapping[str, Any], key: str, metric: str) -> list[str]:
    lines = [
        f"Paired difference from `{summary['reference']}` in {metric}: per problem, averaged over the seeds both "
        "arms ran, then a Student-t 95 % interval over problems.",
        "",
        "| arm | group | problems | reference | arm | difference | 95 % CI |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, groups in summary[key].items():
        for group, r in groups.items():
            mark = "" if r["excludes_zero"] else " (includes 0)"
            lines.append(
                f"| {arm} | {group} | {r['problems']} | {r['base']:.2f} | {r['final']:.2f} | {r['difference']:+.2f} | "
                f"{r['ci_low']:+.2f} … {r['ci_high']:+.2f}{mark} |"
            )
    return [*lines, ""]


def _row_table(summary: Mapping[str, Any], keys: Sequence[str], header: Sequence[str], digits: int) -> list[str]:
    """Arms (and the start) by the per-run rows ``keys``: mean over seeds ± half the interval."""
    keys = [k for k in keys if any(k in e["rows"] for e in summary["arms"].values())]
    if not keys:
        return []
    lines = ["| arm | " + " | ".join(header[i] for i, _ in enumerate(keys)) + " |", "| --- |" + " --- |" * len(keys)]
    start = summary.get("start_rows")
    if start:
        lines.append(
            "| (starting model) | " + " | ".join(f"{start.get(k, float('nan')):.{digits}f}" for k in keys) + " |"
        )
    for arm, e in summary["arms"].items():
        empty = {"mean": float("nan")}
        lines.append(f"| {arm} | " + " | ".join(_fmt(e["rows"].get(k, empty), digits) for k in keys) + " |")
    return [*lines, ""]


def markdown_report(summary: Mapping[str, Any]) -> str:
    """``ablation.md``: the report's tables."""
    metrics = summary["metrics"]
    lines = [
        f"Per arm: mean over seeds ± half the 95 % Student-t interval (points; n = {summary['n']} samples a problem).",
        "",
        "| arm | seeds | " + " | ".join(metrics) + " |",
        "| --- | --- | " + " | ".join("---" for _ in metrics) + " |",
    ]
    if summary.get("start"):
        lines.append(
            "| (starting model) | – | "
            + " | ".join(f"{summary['start'].get(m, float('nan')):.2f}" for m in metrics)
            + " |"
        )
    for arm, e in summary["arms"].items():
        lines.append(f"| {arm} | {len(e['seeds'])} | " + " | ".join(_fmt(e[m]) for m in metrics) + " |")
    lines += ["", *_paired_table(summary, "paired", metrics[0])]
    if summary.get("paired_pass"):
        lines += _paired_table(summary, "paired_pass", metrics[1])
    ks = summary.get("ks", [])
    for scope, prefix in (("all problems", ""), ("the trained levels", "trained.")):
        table = _row_table(summary, [f"{prefix}pass@{k}" for k in ks], [f"pass@{k}" for k in ks], 2)
        if table:
            lines += [f"pass@k on {scope} (points).", "", *table]
    spread = _row_table(
        summary,
        ["all.se", "all.distinct", "trained.se", "trained.distinct"],
        ["SE, all (nats)", "distinct answers, all", "SE, trained (nats)", "distinct answers, trained"],
        3,
    )
    if spread:
        lines += [
            f"Diversity on the held-out problems: a problem's n = {summary['n']} answers, their semantic entropy "
            "and their number of distinct answers (mean over problems).",
            "",
            *spread,
        ]
    lines += [
        "Token entropy (nats, mean over seeds ± 95 % CI) and the share of trained tokens each loss touched (%). "
        "First and last 5: the means of a run's first and last five steps; ratio: last / first.",
        "",
        "| arm | steps | entropy at start | final entropy | lowest entropy | first 5 | last 5 | ratio | penalised % "
        "| selected % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, e in summary["arms"].items():
        steps = sorted(set(e["steps"]))
        empty = {"mean": float("nan")}
        lines.append(
            f"| {arm} | {', '.join(map(str, steps))} | {_fmt(e['entropy_start'], 4)} | {_fmt(e['entropy_final'], 4)} | "
            f"{_fmt(e['entropy_min'], 4)} | {_fmt(e.get('entropy_start_window', empty), 4)} | "
            f"{_fmt(e.get('entropy_end_window', empty), 4)} | {_fmt(e.get('entropy_ratio', empty), 3)} | "
            f"{_fmt(e['penalised_share'], 3)} | {_fmt(e['selected_share'], 1)} |"
        )
    fits = {arm: e["fit"] for arm, e in summary["arms"].items() if "fit" in e}
    if fits:
        lines += [
            "",
            "The entropy–performance fit R = −a·exp(H) + b over every step of an arm's seeds (R: training accuracy, "
            "H: policy entropy), ± one standard error; b − a is the accuracy it predicts at H = 0.",
            "",
            "| arm | steps | a | b | ceiling b − a | R² |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm, f in fits.items():
            if not math.isfinite(f["a"]):
                lines.append(f"| {arm} | {f['n']} | – | – | – | – |")
                continue
            lines.append(
                f"| {arm} | {f['n']} | {f['a']:.3f} ± {f['a_se']:.3f} | {f['b']:.3f} ± {f['b_se']:.3f} | "
                f"{f['ceiling']:.3f} ± {f['ceiling_se']:.3f} | {f['r2']:.2f} |"
            )
    return "\n".join(lines) + "\n"


CURVES = {
    "policy_entropy": ("entropy_curves.png", "policy entropy (nats per token)", "Token entropy"),
    "online_se_mean": ("online_se_curves.png", "online SE of the step's problems (nats)", "Online semantic entropy"),
}
"""Per-step metrics plotted by arm: metric -> (file, y label, title). A curve is drawn for the arms
that log the metric (online SE: the arms with ``curriculum.mode: online``)."""


def plot_entropy_curves(outcomes: Sequence[RunOutcome], path: Path, metric: str = "policy_entropy") -> Path:
    """Every arm's policy entropy (or another `CURVES` metric) per step on one plot: the mean over
    seeds, each seed faint."""
    from sent.plots import _pyplot

    _, ylabel, title = CURVES[metric]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    logged = [o for o in outcomes if any(metric in m for h in o.histories for m in h)]
    arms = list(dict.fromkeys(o.arm for o in logged))
    colours = plt.get_cmap("tab10")
    for i, arm in enumerate(arms):
        curves = [entropy_curve(o.histories, metric) for o in logged if o.arm == arm]
        length = min(len(c) for c in curves)
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, color=colours(i % 10), alpha=0.2, linewidth=0.8)
        if length:
            ax.plot(
                range(1, length + 1), np.nanmean([c[:length] for c in curves], axis=0), color=colours(i % 10), label=arm
            )
    ax.set_xlabel("training step (stages end to end)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} by arm (mean over seeds; seeds faint)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_arm_metric(summary: Mapping[str, Any], metric: str, path: Path) -> Path:
    """A bar per arm: ``metric``'s mean over seeds with its 95 % interval."""
    from sent.plots import _pyplot

    plt = _pyplot()
    arms = list(summary["arms"])
    means = [summary["arms"][a][metric]["mean"] for a in arms]
    lows = [summary["arms"][a][metric]["ci_low"] for a in arms]
    errs = [m - lo if math.isfinite(lo) else 0.0 for m, lo in zip(means, lows, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(arms, means, yerr=errs, capsize=4)
    ax.set_ylabel(f"{metric} (points)")
    ax.set_title(f"{metric} by arm (mean over seeds, 95 % CI)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pass_at_k(summary: Mapping[str, Any], path: Path) -> Path | None:
    """pass@k against k (log scale) for every arm and the starting model: on the trained levels
    when known, else on all problems."""
    from sent.plots import _pyplot

    ks = summary.get("ks", [])
    trained = any(f"trained.pass@{k}" in e["rows"] for e in summary["arms"].values() for k in ks)
    prefix = "trained." if trained else ""
    if not ks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    start = summary.get("start_rows") or {}
    if all(f"{prefix}pass@{k}" in start for k in ks):
        ax.plot(ks, [start[f"{prefix}pass@{k}"] for k in ks], "k--", marker="o", label="starting model")
    for arm, e in summary["arms"].items():
        values = [e["rows"].get(f"{prefix}pass@{k}", {"mean": float("nan")})["mean"] for k in ks]
        ax.plot(ks, values, marker=".", label=arm)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (points)")
    ax.set_title(f"pass@k on {'the trained levels' if trained else 'all problems'} (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(summary: Mapping[str, Any], outcomes: Sequence[RunOutcome], out_dir: Path) -> list[Path]:
    """``ablation.json``, ``ablation.md`` and the plots into ``out_dir``."""
    from sent.data_contract import write_json, write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(summary, out_dir / "ablation.json")
    paths = [out_dir / "ablation.json", write_text(markdown_report(summary), out_dir / "ablation.md")]
    if outcomes:
        for curve, (name, _, _) in CURVES.items():
            if any(curve in m for o in outcomes for h in o.histories for m in h):
                paths.append(plot_entropy_curves(outcomes, out_dir / name, curve))
        metric = summary["metrics"][0]
        paths.append(plot_arm_metric(summary, metric, out_dir / f"{metric.replace('@', '_at_')}_by_arm.png"))
        pass_plot = plot_pass_at_k(summary, out_dir / "pass_at_k.png")
        if pass_plot is not None:
            paths.append(pass_plot)
    return paths
