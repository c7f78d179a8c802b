"""The paper's ablation as one plan: arms (named sets of overrides) x seeds on one shared curation.

An arm is a name for config overrides of ``training.*`` and ``curriculum.*`` (`BUILTIN_ARMS`,
plus ``ablation.arms`` in the config). Every arm x seed trains every stage of its curriculum and
is evaluated on the same held-out problems with the same sampling seeds, so arms compare per
problem, in pairs (common random numbers):

- the toy world, the bootstrap model and the SE scores are shared: an arm's curriculum is
  restaged from the one curation (`sent.curate.restage`), never sampled again;
- the seed of a replicate is ``training.seed`` (batch order and rollouts); the evaluation's
  sampling seed stays the config's ``seed`` for every arm and replicate.

This module plans and summarises; the Prefect flow `flows/ablation.py` runs the plan.

The report: per arm, avg@n, pass@n and maj@n as the mean over seeds with a Student-t 95 %
interval (n_seeds - 1 degrees of freedom); per arm, the paired difference from the reference arm
in avg@n, per problem pooled over seeds (each problem's difference averaged over the seeds both
arms ran, then a Student-t interval over problems, `sent.stats.pooled_paired_difference`); the
final and the lowest policy entropy of each run, the entropy curves of every arm on one plot, and
the share of trained tokens each penalty touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sent.config import BUILTIN_ARMS, ConfigError, SentConfig, load_config
from sent.errors import SentError

ARM_SECTIONS = ("training", "curriculum")
"""What an arm may change: the rest (model, data, sampling, scoring, evaluation, seed) is shared,
or the arms would not share a curation and an evaluation."""


class AblationError(SentError, ValueError):
    """An ablation that cannot run as asked (an unknown arm, an arm that changes a shared setting)."""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class ArmRun:
    """One arm x seed: its overrides on top of the config's, and where it writes."""

    arm: str
    seed: int
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.arm}/seed-{self.seed}"


@dataclass(frozen=True)
class AblationPlan:
    config: str
    base_overrides: tuple[str, ...]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    reference: str
    runs: tuple[ArmRun, ...] = field(default=())


def known_arms(cfg: SentConfig) -> dict[str, tuple[str, ...]]:
    """The built-in arms with the config's own (``ablation.arms``, which may redefine a built-in)."""
    return {**BUILTIN_ARMS, **{k: tuple(v) for k, v in cfg.ablation.arms.items()}}


def parse_list(text: str | Sequence[str] | None, what: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` as a list of non-empty names, in order, without repeats."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            raise AblationError(f"empty name in {what} {text!r}")
        if item not in out:
            out.append(item)
    return out


def parse_seeds(text: str | Sequence[int | str] | None) -> list[int]:
    """``"0,1,2"`` or ``[0, 1, 2]`` as a list of integers."""
    items = text if text is None or isinstance(text, str) else [str(t) for t in text]
    out = []
    for item in parse_list(items, "seeds"):
        try:
            out.append(int(item))
        except ValueError:
            raise AblationError(f"seed {item!r} is not an integer") from None
    return out


def plan_ablation(
    config: str | Path,
    *,
    arms: str | Sequence[str] | None = None,
    seeds: str | Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    reference: str | None = None,
) -> AblationPlan:
    """Validate every arm x seed before anything runs: an unknown arm, an override key the config
    does not have, or an arm that changes a shared section is an error naming the arm."""
    base = load_config(config, list(overrides))
    table = known_arms(base)
    names = parse_list(arms, "arms") or list(base.ablation.default_arms)
    unknown = [a for a in names if a not in table]
    if unknown:
        raise AblationError(f"unknown arm(s) {unknown}; known: {sorted(table)} (or declare them in ablation.arms)")
    reference = reference or base.ablation.reference
    if reference not in names:
        raise AblationError(
            f"the reference arm {reference!r} is not among the arms {names}: add it, or set --reference"
        )
    seed_list = parse_seeds(seeds) or list(base.ablation.seeds)
    if not seed_list:
        raise AblationError("no seeds: give --seeds, or ablation.seeds in the config")
    shared = {k: v for k, v in base.model_dump(mode="json").items() if k not in (*ARM_SECTIONS, "overrides")}
    checked = []
    for name in names:
        arm_overrides = table[name]
        bad = [o for o in arm_overrides if o.partition("=")[0].strip().split(".")[0] not in ARM_SECTIONS]
        if bad:
            raise AblationError(
                f"arm {name!r}: {bad} change a shared setting; an arm may set only {', '.join(ARM_SECTIONS)}.*"
            )
        try:
            cfg = load_config(config, [*overrides, *arm_overrides])
        except ConfigError as exc:
            raise AblationError(f"arm {name!r}: {exc}") from None
        dumped = cfg.model_dump(mode="json")
        changed = [k for k, v in shared.items() if dumped[k] != v]
        if changed:  # e.g. an override that reaches a shared section through a validator
            raise AblationError(f"arm {name!r} changes the shared section(s) {changed}")
        checked.append((name, arm_overrides))
    # seed by seed: an ablation stopped part way has every arm of its first seeds
    runs = [
        ArmRun(name, seed, (*overrides, *arm_overrides, f"training.seed={seed}"))
        for seed in seed_list
        for name, arm_overrides in checked
    ]
    return AblationPlan(
        config=str(config),
        base_overrides=tuple(overrides),
        arms=tuple(Arm(n, table[n]) for n in names),
        seeds=tuple(seed_list),
        reference=reference,
        runs=tuple(runs),
    )


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What one finished arm x seed left: evaluation means, per-problem scores, stage histories."""

    arm: str
    seed: int
    results: dict[str, float]
    """The evaluation's mean over benchmarks: ``{"avg@8": 0.41, "pass@8": ..., "maj@8": ...}`` (shares)."""
    scores: dict[tuple[str, str], float]
    """``{(benchmark, id): avg@n in points}``."""
    histories: list[list[dict[str, float]]]
    """Per stage, the per-step metrics."""


def entropy_curve(histories: Sequence[Sequence[Mapping[str, float]]]) -> list[float]:
    """Policy entropy at every step, the stages end to end."""
    return [float(m.get("policy_entropy", float("nan"))) for h in histories for m in h]


def token_shares(histories: Sequence[Sequence[Mapping[str, float]]]) -> dict[str, float]:
    """The share of trained tokens that the loss penalised (SENT, KL-Cov, Clip-Cov) and selected
    (the 80/20 entropy mask trains only its selection), over the whole run; NaN where the loss
    does not report that count."""
    trained = sum(m.get("n_trained_tokens", 0.0) for h in histories for m in h)
    out = {}
    for key, name in (("n_penalised", "penalised_share"), ("n_selected", "selected_share")):
        counts = [m[key] for h in histories for m in h if key in m]
        out[name] = float(sum(counts) / trained) if counts and trained else float("nan")
    return out


def _interval(values: Sequence[float]) -> dict[str, float]:
    from sent.stats import mean_interval

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    iv = mean_interval(finite)
    return {"mean": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}


def summarise(
    outcomes: Sequence[RunOutcome],
    *,
    reference: str,
    n: int,
    trained_keys: set[tuple[str, str]] | None = None,
    arms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ablation's numbers as JSON-ready data (see the module docstring)."""
    from sent.stats import pooled_paired_difference

    arms = list(arms) if arms is not None else list(dict.fromkeys(o.arm for o in outcomes))
    by_arm: dict[str, list[RunOutcome]] = {
        a: sorted((o for o in outcomes if o.arm == a), key=lambda o: o.seed) for a in arms
    }
    metrics = [f"avg@{n}", f"pass@{n}", f"maj@{n}"]
    summary: dict[str, Any] = {"reference": reference, "n": n, "metrics": metrics, "arms": {}, "paired": {}}
    for arm, runs in by_arm.items():
        entry: dict[str, Any] = {"seeds": [o.seed for o in runs]}
        for metric in metrics:
            entry[metric] = {
                **_interval([100 * o.results.get(metric, float("nan")) for o in runs]),
                "per_seed": {o.seed: 100 * o.results.get(metric, float("nan")) for o in runs},
            }
        curves = [entropy_curve(o.histories) for o in runs]
        entry["entropy_final"] = _interval([c[-1] for c in curves if c])
        entry["entropy_min"] = _interval([float(np.nanmin(c)) for c in curves if c and np.isfinite(c).any()])
        entry["entropy_start"] = _interval([c[0] for c in curves if c])
        shares = [token_shares(o.histories) for o in runs]
        for key in ("penalised_share", "selected_share"):
            entry[key] = _interval([100 * s[key] for s in shares])
        entry["steps"] = [sum(len(h) for h in o.histories) for o in runs]
        summary["arms"][arm] = entry
    ref_scores = {o.seed: o.scores for o in by_arm.get(reference, [])}
    for arm, runs in by_arm.items():
        if arm == reference or not runs or not ref_scores:
            continue
        scores = {o.seed: o.scores for o in runs}
        rows = {"all": pooled_paired_difference(ref_scores, scores, group="all")}
        if trained_keys:
            rows["trained"] = pooled_paired_difference(ref_scores, scores, keys=trained_keys, group="trained")
        summary["paired"][arm] = {k: {**asdict(v), "excludes_zero": v.excludes_zero} for k, v in rows.items()}
    return summary


def _fmt(iv: Mapping[str, float], digits: int = 2) -> str:
    if not math.isfinite(iv["mean"]):
        return "–"
    if not math.isfinite(iv["ci_low"]):
        return f"{iv['mean']:.{digits}f}"
    half = (iv["ci_high"] - iv["ci_low"]) / 2
    return f"{iv['mean']:.{digits}f} ± {half:.{digits}f}"


def markdown_report(summary: Mapping[str, Any]) -> str:
    """``ablation.md``: the three tables of the report."""
    metrics, ref = summary["metrics"], summary["reference"]
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
    lines += [
        "",
        f"Paired difference from `{ref}` in {metrics[0]}: per problem, averaged over the seeds both arms ran, "
        "then a Student-t 95 % interval over problems.",
        "",
        "| arm | group | problems | reference | arm | difference | 95 % CI |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, groups in summary["paired"].items():
        for group, r in groups.items():
            mark = "" if r["excludes_zero"] else " (includes 0)"
            lines.append(
                f"| {arm} | {group} | {r['problems']} | {r['base']:.2f} | {r['final']:.2f} | {r['difference']:+.2f} | "
                f"{r['ci_low']:+.2f} … {r['ci_high']:+.2f}{mark} |"
            )
    lines += [
        "",
        "Token entropy (nats, mean over seeds ± 95 % CI) and the share of trained tokens each loss touched (%).",
        "",
        "| arm | steps | entropy at start | final entropy | lowest entropy | penalised % | selected % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, e in summary["arms"].items():
        steps = sorted(set(e["steps"]))
        lines.append(
            f"| {arm} | {', '.join(map(str, steps))} | {_fmt(e['entropy_start'], 4)} | {_fmt(e['entropy_final'], 4)} | "
            f"{_fmt(e['entropy_min'], 4)} | {_fmt(e['penalised_share'], 3)} | {_fmt(e['selected_share'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def plot_entropy_curves(outcomes: Sequence[RunOutcome], path: Path) -> Path:
    """Every arm's policy entropy per step on one plot: the mean over seeds, each seed faint."""
    from sent.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    arms = list(dict.fromkeys(o.arm for o in outcomes))
    colours = plt.get_cmap("tab10")
    for i, arm in enumerate(arms):
        curves = [entropy_curve(o.histories) for o in outcomes if o.arm == arm]
        length = min(len(c) for c in curves)
        for c in curves:
            ax.plot(range(1, len(c) + 1), c, color=colours(i % 10), alpha=0.2, linewidth=0.8)
        if length:
            ax.plot(
                range(1, length + 1), np.nanmean([c[:length] for c in curves], axis=0), color=colours(i % 10), label=arm
            )
    ax.set_xlabel("training step (stages end to end)")
    ax.set_ylabel("policy entropy (nats per token)")
    ax.set_title("Token entropy by arm (mean over seeds; seeds faint)")
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


def write_report(summary: Mapping[str, Any], outcomes: Sequence[RunOutcome], out_dir: Path) -> list[Path]:
    """``ablation.json``, ``ablation.md`` and the plots into ``out_dir``."""
    from sent.data_contract import write_json, write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(summary, out_dir / "ablation.json")
    paths = [out_dir / "ablation.json", write_text(markdown_report(summary), out_dir / "ablation.md")]
    if outcomes:
        paths.append(plot_entropy_curves(outcomes, out_dir / "entropy_curves.png"))
        metric = summary["metrics"][0]
        paths.append(plot_arm_metric(summary, metric, out_dir / f"{metric.replace('@', '_at_')}_by_arm.png"))
    return paths
