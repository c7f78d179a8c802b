"""The ablation's own steps (`flows/ablation.py`): its MLflow parent run, one child run per arm x
seed, each arm's curriculum restaged from the shared curation, and the report.

The training and evaluation of an arm x seed are the pipeline's own tasks (`tasks.train`,
`tasks.evaluate`) with the arm's `RunContext`: its overrides, its directory
``<out>/runs/<arm>/seed-<s>`` and its MLflow run. Their cache keys hold the run directory, the
training section (with ``training.seed``) and the inputs' digests, so a finished arm x seed is
not trained again, an interrupted one resumes from its checkpoints, and a new seed or arm runs
alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from sent.ablation import AblationPlan, ArmRun
from sent.ablation_report import RunOutcome, token_shares, write_report
from sent.ablation_runs import evaluation_outcome, summarise_ablation
from sent.lineage import code_version, digest_of
from sent.steps import default_steps
from tasks.cache import cache_on
from tasks.context import Artefact, RunContext, produced
from tasks.retries import IO_RETRY_OPTIONS

logger = logging.getLogger(__name__)
PLAN = "plan.json"


def arm_dir(out: str | Path, run: ArmRun) -> Path:
    return Path(out) / "runs" / run.arm / f"seed-{run.seed}"


@task(name="open-ablation", task_run_name="open-ablation")
def open_ablation(plan: AblationPlan, out: str, root: str) -> RunContext:
    """The ablation's directory and MLflow parent run; the base `RunContext` (the config with the
    ablation's own overrides) for the shared steps: bootstrap, curate and ``eval:base``."""
    from prefect.runtime import flow_run

    from sent.config_loading import load_config
    from sent.data_contract import write_json
    from sent.redaction import redact_uri
    from sent.tracking import Tracker, lineage_tags, resolve_tracking_uri

    cfg = load_config(plan.config, list(plan.base_overrides))
    out_dir = Path(out).resolve()
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, Path(root))
    tracker = Tracker(uri, cfg.tracking.experiment, Path(root) / cfg.tracking.artifact_root)
    flow_id = str(flow_run.id) if flow_run.id else None
    tags = lineage_tags(
        root,
        prefect_flow_run_id=flow_id,
        seed=cfg.seed,
        config=Path(plan.config).resolve(),
        run_dir=out_dir,
        ablation="true",
        arms=",".join(a.name for a in plan.arms),
        seeds=",".join(map(str, plan.seeds)),
        reference=plan.reference,
        code_version=code_version(),
    )
    params = {**cfg.public_dump(), "ablation_arms": {a.name: list(a.overrides) for a in plan.arms}}
    parent = tracker.start_run(f"ablation-{out_dir.name}", tags=tags, params=params)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "config": str(Path(plan.config).resolve()),
            "overrides": list(plan.base_overrides),
            "arms": {a.name: list(a.overrides) for a in plan.arms},
            "seeds": list(plan.seeds),
            "reference": plan.reference,
            "code_version": code_version(),
            "mlflow": {"tracking_uri": redact_uri(uri), "run_id": parent},
            "prefect_flow_run_id": flow_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        out_dir / PLAN,
    )
    logger.info("ablation %s: %d arms x %d seeds; MLflow run %s", out_dir, len(plan.arms), len(plan.seeds), parent)
    return RunContext(
        config=str(Path(plan.config).resolve()),
        overrides=list(plan.base_overrides),
        root=root,
        run_dir=str(out_dir),
        steps=["bootstrap", "curate", "eval:base"] if cfg.toy is not None else ["curate", "eval:base"],
        tracking_uri=uri,
        experiment=cfg.tracking.experiment,
        mlflow_run_id=parent,
        flow_run_id=flow_id,
    )


@task(name="open-arm-run", task_run_name="open:{run.arm}/seed-{run.seed}")
def open_arm_run(base: RunContext, run: ArmRun) -> RunContext:
    """A child run of the ablation for one arm x seed, and that run's context."""
    from sent.tracking import Tracker

    cfg = load_arm(base, run)
    tracker = Tracker(base.tracking_uri, base.experiment)
    tags = {"sent.arm": run.arm, "sent.seed": str(run.seed), "sent.overrides": " ".join(run.overrides)[:5000]}
    params = {"arm": run.arm, "training_seed": run.seed, "training": cfg.training.model_dump(mode="json")}
    params["curriculum"] = cfg.curriculum.model_dump(mode="json")
    run_id = tracker.start_run(run.name, parent_id=base.mlflow_run_id, tags=tags, params=params)
    steps = [s for s in default_steps(cfg) if s.startswith(("train:", "rescore:"))] + ["eval"]
    return base.model_copy(
        update={
            "overrides": list(run.overrides),
            "run_dir": str(arm_dir(base.run_dir, run)),
            "steps": steps,
            "mlflow_run_id": run_id,
            "started": time.time(),
        }
    )


def end_arm_run(ctx: RunContext, exc: BaseException) -> None:
    """An arm x seed that raised: its MLflow run FAILED (KILLED when stopped by a signal), with the error."""
    from sent.interrupt import Interrupted
    from sent.tracking import Tracker

    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    tracker.set_tags(ctx.mlflow_run_id, {"sent.error": f"{type(exc).__name__}: {exc}"[:5000]})
    tracker.end_run(ctx.mlflow_run_id, failed=True, killed=isinstance(exc, Interrupted | KeyboardInterrupt))


def load_arm(base: RunContext, run: ArmRun):
    from sent.config_loading import load_config

    return load_config(base.config, list(run.overrides))


def _restage_key(inputs: dict) -> str:
    ctx: RunContext = inputs["ctx"]
    cfg = ctx.load()
    return digest_of(
        "restage", inputs["curation"].digest, cfg.section_digest("curriculum"), cfg.seed, inputs["out"], code_version()
    )


@task(
    name="restage",
    task_run_name="restage",
    cache_policy=cache_on(_restage_key),
    persist_result=True,
    **IO_RETRY_OPTIONS,
)
def restage_step(ctx: RunContext, curation: Artefact, out: str) -> Artefact:
    """The arm's curriculum: the shared curation itself when the arm keeps its curriculum
    settings, else the same scores restaged (`sent.curate.restage`) into
    ``<out>/curricula/<digest>`` (nothing is sampled again)."""
    from sent.config import NOT_IN_OUTPUT
    from sent.curate import restage
    from sent.data_contract import load_manifest

    cfg = ctx.load()
    curation.verified()
    manifest = load_manifest(curation.path, verify=False)
    made_by = {k: v for k, v in manifest["config"]["curriculum"].items() if k not in NOT_IN_OUTPUT["curriculum"]}
    if made_by == cfg.section_dump("curriculum"):  # the mode changes later steps, not the curation
        return curation
    target = Path(out) / "curricula" / digest_of(curation.digest, cfg.section_digest("curriculum"))[:12]
    t0 = time.perf_counter()
    result = restage(cfg, curation.path, target)
    m = result.manifest
    return Artefact.of(
        "curriculum",
        "curate",
        result.out_dir,
        meta={
            "restaged_from": curation.path,
            "counts": m["counts"],
            "stages": m["curriculum"]["stages"],
            **produced(ctx, time.perf_counter() - t0),
        },
    )


def _outcome(run: ArmRun, trained: list[Artefact], evaluation: Artefact) -> RunOutcome:
    return evaluation_outcome(run.arm, run.seed, Path(evaluation.path), [Path(a.path).parent for a in trained])


@task(name="close-arm-run", task_run_name="close:{run.arm}/seed-{run.seed}")
def close_arm_run(ctx: RunContext, run: ArmRun, trained: list[Artefact], evaluation: Artefact) -> dict[str, Any]:
    """The arm x seed's summary metrics into its MLflow run (also when its steps came from the
    cache), and the run ended. Returns what the report reads."""
    from sent.ablation_report import entropy_curve
    from sent.tracking import Tracker

    outcome = _outcome(run, trained, evaluation)
    curve = entropy_curve(outcome.histories)
    finite = [h for h in curve if h == h]
    metrics = {f"eval.{k}": v for k, v in outcome.results.items()}
    metrics.update({f"tokens.{k}": v for k, v in token_shares(outcome.histories).items()})
    if finite:
        metrics.update({"entropy.final": curve[-1], "entropy.min": min(finite), "entropy.start": curve[0]})
    metrics["steps"] = float(len(curve))
    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    tracker.log_metrics(ctx.mlflow_run_id, metrics)
    for step, h in enumerate(curve, start=1):
        if h == h:
            tracker.log_metrics(ctx.mlflow_run_id, {"policy_entropy": h}, step)
    tracker.end_run(ctx.mlflow_run_id)
    return {
        "arm": run.arm,
        "seed": run.seed,
        "run_dir": ctx.run_dir,
        "trained": [a.model_dump() for a in trained],
        "evaluation": evaluation.model_dump(),
        "mlflow_run_id": ctx.mlflow_run_id,
    }


@task(name="ablation-report", task_run_name="ablation-report")
def ablation_report(
    base: RunContext, plan: AblationPlan, finished: list[dict[str, Any]], error: str | None = None
) -> dict[str, Any]:
    """``ablation.md``, ``ablation.json`` and the plots from every finished arm x seed, into the
    ablation's directory and its MLflow parent run, which then ends (failed with ``error``)."""
    from prefect.artifacts import create_markdown_artifact

    from sent.ablation_report import markdown_report
    from sent.tracking import Tracker

    cfg = base.load()
    runs = {(r.arm, r.seed): r for r in plan.runs}
    outcomes = [
        _outcome(
            runs[(f["arm"], f["seed"])],
            [Artefact.model_validate(a) for a in f["trained"]],
            Artefact.model_validate(f["evaluation"]),
        )
        for f in finished
    ]
    summary = summarise_ablation(
        cfg,
        Path(base.run_dir),
        outcomes,
        reference=plan.reference,
        arms=[a.name for a in plan.arms if any(o.arm == a.name for o in outcomes)],
    )
    summary["runs"] = {f"{f['arm']}/seed-{f['seed']}": f["run_dir"] for f in finished}
    summary["missing"] = sorted(
        r.name for r in plan.runs if (r.arm, r.seed) not in {(f["arm"], f["seed"]) for f in finished}
    )
    out = Path(base.run_dir)
    paths = write_report(summary, outcomes, out)
    tracker = Tracker(base.tracking_uri, base.experiment)
    for path in paths:
        tracker.log_artifact(base.mlflow_run_id, path, "reports")
    flat = {}
    for arm, entry in summary["arms"].items():
        for metric in summary["metrics"]:
            flat[f"{arm}.{metric}"] = entry[metric]["mean"]
    for arm, groups in summary["paired"].items():
        for group, row in groups.items():
            flat.update({f"paired.{arm}.{group}.{k}": row[k] for k in ("difference", "ci_low", "ci_high")})
    tracker.log_metrics(base.mlflow_run_id, {k: v for k, v in flat.items() if v == v})
    if outcomes:
        create_markdown_artifact(key="ablation", markdown=markdown_report(summary), description=str(out))
    tracker.end_run(base.mlflow_run_id, failed=error is not None)
    logger.info("ablation report: %s", out / "ablation.md")
    return summary
