"""The ``sent`` command line: each phase alone (curate, train, eval), or the pipeline and the ablation as flows."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sent import __version__
from sent.cli_reports import curation_report, pipeline_report
from sent.errors import SentError
from sent.flow_calls import FlowRefused, prefect_environment, run_flow


def _cmd_grade(args: argparse.Namespace) -> int:
    from sent.rewards import compute_score

    response = sys.stdin.read() if args.response == "-" else args.response
    result = compute_score(None, response, args.answer, correct_score=1.0, incorrect_score=args.incorrect_score)
    print(json.dumps(result))
    return 0 if result["acc"] else 1


def _cmd_se(args: argparse.Namespace) -> int:
    from sent.semantic import score_answers

    answers = [None if a == "" else a for a in args.answers]
    score = score_answers(answers, pool_missing=args.pool_missing)
    print(json.dumps({"classes": score.cluster_ids, "n_classes": score.n_classes, "entropy": score.entropy}))
    return 0


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock", "math_verify"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(args: argparse.Namespace):
    from sent.config_loading import load_config

    return load_config(args.config, args.overrides)


def _cmd_curate(args: argparse.Namespace) -> int:
    from sent.curate import curate

    _setup_logging(args.verbose)
    result = curate(_load(args), out=args.out, limit=args.limit)
    print(curation_report(result.manifest, result.out_dir, reused=result.reused))
    return 0


def _cmd_toy_bootstrap(args: argparse.Namespace) -> int:
    from sent.toy.bootstrap import bootstrap

    _setup_logging(args.verbose)
    cfg = _load(args)
    if cfg.toy is None:
        raise SystemExit(f"{args.config} has no toy section")
    result = bootstrap(cfg.toy, cfg.prompt, force=args.force)
    accuracy = ", ".join(f"{k} {v:.2f}" for k, v in result.accuracy_by_level.items())
    state = "up to date" if result.cached else f"built in {result.seconds:.0f}s"
    print(f"toy model {state}: {result.model_dir} ({result.n_parameters:,} parameters)")
    print(f"  greedy accuracy by level: {accuracy}")
    print(f"  problems: {result.train_path} (SFT), {result.rl_path} (RL), {result.test_path} (held out)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from sent.curate import default_out_dir
    from sent.engines.dispatch import train_stage

    _setup_logging(args.verbose)
    cfg = _load(args)
    engine = args.engine or cfg.training.engine
    curriculum = Path(args.curriculum or default_out_dir(cfg, cfg.data.limit))
    run_dir = Path(args.out or Path("data/runs") / f"train-{curriculum.name}-{cfg.training.loss}")
    if engine == "verl":  # verl's own checks of the job's config, before minutes of start-up
        shown = _check_verl_job(args, cfg, curriculum, run_dir)
        if args.dry_run:
            print(shown)
            return 0
    elif args.dry_run:
        raise SystemExit("--dry-run shows a verl job; the local engine has nothing to show before it runs")
    result = train_stage(
        cfg,
        stage=args.stage,
        curriculum_dir=curriculum,
        run_dir=run_dir,
        engine=engine,
        max_steps=args.max_steps,
        fresh=args.fresh,
    )
    unit = "verl steps" if engine == "verl" else "steps"
    print(f"stage {result.stage}: {result.steps} {unit} from {result.start_model}; final weights: {result.final_dir}")
    last = result.history[-1] if result.history else {}
    if "accuracy" in last and "policy_entropy" in last:
        print(f"  last step: accuracy {last['accuracy']:.3f}, policy entropy {last['policy_entropy']:.4f}")
    return 0


def _check_verl_job(args: argparse.Namespace, cfg, curriculum: Path, run_dir: Path) -> str:
    """Plan the stage's verl job and check its config with verl's own code; returns what
    ``--dry-run`` prints (the command and the resolved config)."""
    from omegaconf import OmegaConf

    from sent.engines.stage import start_model_for
    from sent.engines.verl import check_verl_config, compose_verl_config, plan_stage

    # a dry run may show stage K before stage K-1 is trained: its start is where those weights will be
    start = start_model_for(cfg, run_dir.resolve(), args.stage, must_exist=not args.dry_run)
    plan = plan_stage(
        cfg, stage=args.stage, curriculum_dir=curriculum, run_dir=run_dir, start_model=start, max_steps=args.max_steps
    )
    composed = compose_verl_config(plan.overrides)
    check_verl_config(composed)
    lines = [f"# stage {plan.stage} of {run_dir} on verl: the command", plan.shell()]
    if not plan.curated:
        lines.append(f"# (not curated yet: the stage will read {plan.train_files[0].parent}/part-*.parquet)")
    if args.stage > 1 and not Path(start).is_dir():
        lines.append(f"# (stage {args.stage - 1} not trained yet: its merged weights will be at {start})")
    lines += ["# the resolved verl config", OmegaConf.to_yaml(composed, resolve=False)]
    return "\n".join(lines)


def _cmd_eval(args: argparse.Namespace) -> int:
    from sent.evaluation import evaluate_model, evaluate_responses, markdown_table, summarize, write_results

    _setup_logging(args.verbose)
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    if args.responses:
        from sent.evaluation import read_responses

        if not benchmarks:
            raise SystemExit("--responses needs --benchmarks")
        cfg = _load(args) if args.config else None
        toy_dir = cfg.toy.data_dir if cfg is not None and cfg.toy is not None else args.toy_dir
        ks = cfg.evaluation.k if cfg is not None else [1]
        data_dir = args.data_dir or (cfg.evaluation.data_dir if cfg is not None else None)
        responses = read_responses(args.responses)
        per_benchmark, details = evaluate_responses(
            responses, benchmarks, data_dir=data_dir, toy_dir=toy_dir, ks=ks, allow_unknown_ids=args.allow_unknown_ids
        )
        out = Path(args.out or Path(args.responses).with_suffix(".eval"))
        meta = {
            "responses": args.responses,
            "rejected_rows": [{"line": line, "reason": reason} for line, reason in responses.rejected],
            "unknown_ids": len(set(responses.by_id) - {d["id"] for d in details}),
        }
        results = write_results(out, per_benchmark, details, meta)
        if responses.rejected:
            print(f"note: {len(responses.rejected)} unreadable rows of {args.responses} left out (see results.json)")
    else:
        if not args.config or not args.model:
            raise SystemExit("sent eval needs --config and --model (or --responses)")
        cfg = _load(args)
        out = Path(args.out or Path("data/evals") / Path(args.model).name)
        results = evaluate_model(
            cfg,
            model_path=args.model,
            benchmarks=benchmarks,
            n=args.n,
            data_dir=args.data_dir,
            out_dir=out,
            limit=args.limit,
        )
    print(markdown_table(results["benchmarks"], summarize(results["benchmarks"])))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}, {out / 'details.parquet'}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from sent.tracking import check_reachable, resolve_tracking_uri

    # before a Prefect server is started for the flow: a bad config or an unreachable store fails in seconds
    check_reachable(resolve_tracking_uri(_load(args).tracking.tracking_uri))
    prefect_environment()
    from flows.pipeline import sent_pipeline

    _setup_logging(args.verbose)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    record = run_flow(
        sent_pipeline,
        config=args.config,
        overrides=args.overrides,
        steps=steps,
        reuse=args.reuse,
        run_dir=args.run_dir,
        refresh_cache=args.refresh_cache,
    )
    print(pipeline_report(record))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    """One line per check; exit 1 when any check fails (`sent.doctor`)."""
    from sent.doctor import diagnose

    prefect_environment()
    findings = diagnose(_load(args))
    for finding in findings:
        print(finding.line())
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    print(f"{len(findings)} checks: {failed} failed, {warned} warnings")
    return 1 if failed else 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    """The paper's training set and benchmarks into ``--out`` (`sent.fetch`)."""
    from sent.fetch import fetch

    for fetched in fetch(args.names, out=args.out, from_dir=args.from_dir, revision=args.revision):
        print(fetched.line())
    return 0


def _ablation_report_only(args: argparse.Namespace) -> int:
    """``sent ablate --report-only``: the report of every finished run in ``--out``, from disk."""
    from sent.ablation_runs import report_from_disk

    cfg = _load(args)
    out = Path(args.out or Path("data") / "runs" / f"ablation-{Path(args.config).stem}")
    summary = report_from_disk(cfg, out, args.reference or cfg.ablation.reference)
    print(f"ablation report of {len(summary['runs'])} runs: {out / 'ablation.md'}\n")
    print((out / "ablation.md").read_text(encoding="utf-8"))
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    if args.report_only:
        return _ablation_report_only(args)
    from sent.ablation import plan_ablation
    from sent.tracking import check_reachable, resolve_tracking_uri

    # every arm validated, and the tracking store reached, before a Prefect server is started
    plan = plan_ablation(
        args.config, arms=args.arms, seeds=args.seeds, overrides=args.overrides, reference=args.reference
    )
    check_reachable(resolve_tracking_uri(_load(args).tracking.tracking_uri))
    prefect_environment()
    from flows.ablation import sent_ablation

    _setup_logging(args.verbose)
    out = args.out or str(Path("data") / "runs" / f"ablation-{Path(args.config).stem}")
    print(f"ablation: {len(plan.arms)} arms x {len(plan.seeds)} seeds = {len(plan.runs)} runs into {out}")
    summary = run_flow(
        sent_ablation,
        config=args.config,
        arms=[a.name for a in plan.arms],
        seeds=list(plan.seeds),
        out=out,
        overrides=args.overrides,
        reference=plan.reference,
        parallel=args.parallel,
    )
    report = Path(out) / "ablation.md"
    print(f"\nablation report: {report}\n")
    print(report.read_text(encoding="utf-8"))
    if summary.get("missing"):
        print(f"not finished: {', '.join(summary['missing'])}")
    return 0


def _add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--config", default=default, required=default is None, help="YAML config (configs/...)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    p.add_argument("-v", "--verbose", action="store_true")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--limit 0`` or ``-5`` is refused before anything runs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    grade = sub.add_parser("grade", help="grade one response against a reference answer (exit 0 iff correct)")
    grade.add_argument("--response", required=True, help="the response text, or - to read it from stdin")
    grade.add_argument("--answer", required=True, help="the reference answer")
    grade.add_argument("--incorrect-score", type=float, default=-1.0, help="score of a wrong answer (-1 or 0)")
    grade.set_defaults(func=_cmd_grade)

    se = sub.add_parser("se", help="semantic entropy of a list of final answers ('' = no answer)")
    se.add_argument("answers", nargs="+")
    se.add_argument("--pool-missing", action="store_true", help="missing answers form one class")
    se.set_defaults(func=_cmd_se)

    cur = sub.add_parser("curate", help="sample, grade, cluster and stage problems into a curriculum")
    _add_config_args(cur)
    cur.add_argument("--out", help="output directory (default data/runs/curate-<config digest>)")
    cur.add_argument("--limit", type=positive_int, help="curate only the first N input rows (smoke runs)")
    cur.set_defaults(func=_cmd_curate)

    tr = sub.add_parser("train", help="train one curriculum stage with GRPO and the configured policy loss")
    _add_config_args(tr)
    tr.add_argument(
        "--stage", type=positive_int, required=True, help="curriculum stage K (K > 1 starts from stage K-1)"
    )
    tr.add_argument("--curriculum", help="curation directory (default: this config's curation run)")
    tr.add_argument("--out", help="run directory; stages land in <out>/stage-K (default data/runs/train-...)")
    tr.add_argument("--max-steps", type=positive_int, help="stop the stage after N steps")
    tr.add_argument("--fresh", action="store_true", help="retrain a finished stage (the old run is kept)")
    tr.add_argument("--engine", choices=["local", "verl"], help="override training.engine")
    tr.add_argument("--dry-run", action="store_true", help="verl: print the job's command and resolved config only")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="score a model (or given responses) on benchmarks: pass@k, avg@n, maj@n")
    ev.add_argument("--config", help="YAML config (sampling settings, benchmarks, data directory)")
    ev.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    ev.add_argument("--model", help="model directory (or hub id) to sample from")
    ev.add_argument("--responses", help="JSONL of {id, response} to score instead of sampling")
    ev.add_argument("--benchmarks", help="comma-separated names: aime24,aime25,amc23,math500,olympiadbench,minerva,toy")
    ev.add_argument("--data-dir", help="directory of <benchmark>.jsonl files")
    ev.add_argument("--toy-dir", help="toy world directory (for --benchmarks toy without a config)")
    ev.add_argument("--n", type=positive_int, help="samples per problem (default evaluation.n)")
    ev.add_argument("--limit", type=positive_int, help="first N problems of each benchmark (smoke runs)")
    ev.add_argument("--out", help="output directory")
    ev.add_argument(
        "--allow-unknown-ids", action="store_true", help="responses whose id is in no benchmark: warn instead of fail"
    )
    ev.add_argument("-v", "--verbose", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    pipe = sub.add_parser("pipeline", help="the whole pipeline as a Prefect flow, tracked in MLflow")
    _add_config_args(pipe, default="configs/toy.yaml")
    pipe.add_argument("--steps", help="comma-separated: bootstrap,curate,train:K,eval:base,eval (default all)")
    pipe.add_argument("--reuse", help="a previous run directory whose artefacts feed the steps not run")
    pipe.add_argument("--run-dir", help="run directory (default data/runs/pipeline-<date>-<id>); existing = continue")
    pipe.add_argument("--refresh-cache", action="store_true", help="recompute cached steps")
    pipe.set_defaults(func=_cmd_pipeline)

    doc = sub.add_parser("doctor", help="check what a config needs (model, data, packages, GPUs, services, disk)")
    doc.add_argument("config", help="YAML config (configs/...)")
    doc.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides")
    doc.set_defaults(func=_cmd_doctor)

    abl = sub.add_parser("ablate", help="the paper's ablation: arms (sets of overrides) x seeds, compared in pairs")
    _add_config_args(abl, default="configs/toy.yaml")
    abl.add_argument(
        "--arms",
        help="comma-separated arms (built in: grpo,kl_cov,clip_cov,entropy_mask,sent,sent_random_stages,"
        "sent_one_stage,grpo_curriculum,grpo_positive,sent_rescored,sent_online,sent_online_filter; more in "
        "ablation.arms); default ablation.default_arms",
    )
    abl.add_argument("--seeds", help="comma-separated training seeds, e.g. 0,1,2 (default ablation.seeds)")
    abl.add_argument("--reference", help="the arm the others are compared with (default ablation.reference)")
    abl.add_argument("--out", help="ablation directory (default data/runs/ablation-<config>); existing = resume")
    abl.add_argument("--parallel", type=positive_int, default=1, help="arm x seed runs at a time, one process each")
    abl.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report every finished arm x seed in --out (also those of earlier calls), from disk",
    )
    abl.set_defaults(func=_cmd_ablate)

    data = sub.add_parser("data", help="the paper's data").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser(
        "fetch", help="DAPO-Math-17k and the six benchmarks into <out>/datasets and <out>/benchmarks, with a manifest"
    )
    fetch.add_argument("names", nargs="*", help="data sets to fetch (default all): dapo-math-17k, aime24, ...")
    fetch.add_argument("--out", default="data", help="directory to write into (default data)")
    fetch.add_argument(
        "--from", dest="from_dir", help="a local copy: <name>.jsonl, <name>.parquet or a datasets directory <name>/"
    )
    fetch.add_argument("--revision", help="hub revision to read (default the newest; the manifest records the commit)")
    fetch.set_defaults(func=_cmd_data_fetch)

    toy = sub.add_parser("toy", help="the toy world").add_subparsers(dest="toy_command", required=True)
    boot = toy.add_parser("bootstrap", help="generate the toy problems and warm-start the toy model (cached)")
    _add_config_args(boot, default="configs/toy.yaml")
    boot.add_argument("--force", action="store_true", help="rebuild even when up to date")
    boot.set_defaults(func=_cmd_toy_bootstrap)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sent.interrupt import Interrupted, handle_signals

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key.path=value overrides may stand anywhere on the line, between options too
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        with handle_signals():
            return args.func(args)
    except (SentError, FlowRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a second signal (`StopNow`), or Ctrl-C outside any handler
        print("error: stopped at once by a second signal (a rerun resumes from the last checkpoint)", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    raise SystemExit(main())
