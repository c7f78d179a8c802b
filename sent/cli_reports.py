"""What the command line prints when a curation or a pipeline run finishes: counts and stages,
where the results are, and how to open them."""

from __future__ import annotations

from pathlib import Path


def _number(value: float | None, fmt: str = ".3f") -> str:
    """A manifest number (None where JSON has no NaN) for people."""
    return "n/a" if value is None else format(value, fmt)


def curation_report(m: dict, out_dir: Path, *, reused: bool) -> str:
    """What a curation wrote: counts, each stage (an empty one said as such), the SE/difficulty correlation."""
    stages = ", ".join(
        f"stage {s['stage']}: {s['count']} problems, mean SE {_number(s['se_mean'])}"
        if s["count"]
        else f"stage {s['stage']}: empty"
        for s in m["curriculum"]["stages"]
    )
    lines = [
        f"curriculum {'reused' if reused else 'written'}: {out_dir}",
        f"  {m['counts']['accepted']} accepted, {m['counts']['rejected']} rejected; {stages}",
        f"  Pearson r(SE, 1 - pass rate) = {_number(m['curriculum']['pearson_r_se_vs_1_minus_pass_rate'])}",
    ]
    empty = m["curriculum"].get("empty_stages")
    if empty:
        lines.append(
            f"  note: stage(s) {', '.join(map(str, empty))} received no problems (too few distinct SE values for "
            f"{m['curriculum']['n_stages']} stages); training such a stage is refused"
        )
    return "\n".join(lines)


def pipeline_report(record: dict) -> str:
    """Where a finished pipeline run's results are, and how to look at them."""
    run_dir = Path(record["run_dir"])
    lines = [f"\npipeline run {record['status']}: {run_dir}"]
    for step, a in record["artefacts"].items():
        lines.append(f"  {step:10s} {a['path']}")
    for name, title in (("eval-base", "starting model"), ("eval-final", "trained model")):
        table = run_dir / name / "results.md"
        if table.is_file():
            lines += [f"\n{title} ({table}):", table.read_text(encoding="utf-8").rstrip()]
    comparison = run_dir / "comparison.md"
    if comparison.is_file():
        lines += [f"\n{comparison.read_text(encoding='utf-8').rstrip()}"]
    timing = record.get("timing")
    if timing:
        lines.append(
            f"\ntime: {timing['wall_s']:.1f} s in the flow, of which {timing['compute_s']:.1f} s in the steps' "
            f"own work and {timing['orchestration_and_tracking_s']:.1f} s in orchestration and tracking"
        )
    ml = record["mlflow"]
    lines += [
        f"\nMLflow: parent run {ml['run_id']} in {ml['tracking_uri']}",
        f"  open the UI: .venv/bin/mlflow ui --backend-store-uri {ml['tracking_uri']}  (then http://127.0.0.1:5000)",
        "Prefect: .venv/bin/prefect server start  (then http://127.0.0.1:4200; local flow runs are listed there)",
    ]
    return "\n".join(lines)
