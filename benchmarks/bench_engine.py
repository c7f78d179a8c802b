"""The local GRPO engine's step, phase by phase, and side by side with TRL's ``GRPOTrainer``.

    python benchmarks/bench_engine.py                    # the local engine alone, per phase
    python benchmarks/bench_engine.py --against trl      # local vs TRL on the same workload

Both sides run the same workload from ``--config`` (default `configs/toy.yaml`, the demo's own
step): the toy model's files, stage 1's prompts in the same order, G responses of at most
``max_response_tokens``, fp32 on CPU, the same learning rate, betas and gradient clip,
``train_batch_size / mini_batch_size`` optimizer steps per rollout batch and PPO epoch
(``ppo_epochs``, TRL's ``num_iterations``), ``micro_batch_size`` sequences per forward, and the
same reference KL: TRL's ``beta`` is our ``ref_kl_coef``, both the k3 estimator to the starting
model (the TRL worker checks, on its warm-up steps, that our `kl_penalty` gives TRL's value on
TRL's own tensors, and prints the largest difference). Ours runs ``--loss`` (default: the
config's); TRL runs ``loss_type="dapo"`` (the clipped surrogate, token-mean over the mini-batch:
the same normalisation), without vLLM. One difference stays: TRL has no filter of groups without
signal (``training.filter_groups``), so it runs its forward and backward over all of them.

Each side runs in its own worker process (so each has its own peak RSS), and the parent steps
them in turn (local, TRL, local, TRL, ...): drift of the machine's speed hits both alike. A
step is one rollout batch and its optimizer steps. The first ``--warmup`` steps of each are not
timed; medians over the ``--steps`` after them are printed, with the split per phase:
generate, scoring, old log-probs (a separate no-grad pass, 0 where the sampling log-probs are
reused), forward (with the loss), backward, optimizer (clip and step), and the rest.
The last line is the ratio of response tokens per second over the whole step.
Needs `sent toy bootstrap` and `sent curate --config configs/toy.yaml`; TRL from the ``bench``
extra (``pip install -e '.[bench]'``). Run it alone: on 2 cores any other process doubles the
times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("generate", "scoring", "old_logprobs", "forward", "backward", "optimizer")
MARK = "@@bench "
TIME_PREFIX = "time/"  # the local engine's per-phase metrics


def _config(args: argparse.Namespace):
    from sent.config_loading import load_config

    loss = [f"training.loss={args.loss}"] if args.loss else []
    return load_config(ROOT / args.config, [*loss, *args.set])


def _curriculum(cfg) -> Path:
    from sent.curate import default_out_dir

    return default_out_dir(cfg, cfg.data.limit)


def _report(record: dict[str, Any]) -> None:
    print(MARK + json.dumps(record), flush=True)


def _wait_for_command() -> str:
    return sys.stdin.readline().strip()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ the workers


def run_local(args: argparse.Namespace) -> None:
    from sent.engines.local import LocalEngine

    cfg = _config(args)
    with tempfile.TemporaryDirectory() as run_dir:
        engine = LocalEngine(cfg, stage=1, curriculum_dir=_curriculum(cfg), run_dir=run_dir, progress=False)
        engine._build()
        batch = cfg.training.train_batch_size
        while _wait_for_command() == "step":
            rows = [engine.rows[i] for i in engine.order[engine.step * batch : (engine.step + 1) * batch]]
            metrics = engine._grpo_step(rows)
            engine.step += 1
            phases = {k.removeprefix(TIME_PREFIX): v for k, v in metrics.items() if k.startswith(TIME_PREFIX)}
            phases["generate"] = phases.get("generate", 0.0) + phases.pop("batching", 0.0)
            _report(
                {
                    "seconds": metrics["step_time"],
                    "tokens": metrics["tokens_per_s"] * metrics["step_time"],
                    "phases": phases,
                }
            )
    _report({"peak_rss_mib": _peak_rss_mib()})


class _PhaseTimes:
    """Seconds per phase inside TRL, by wrapping the trainer's own methods (bench only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.tokens = 0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def wrap(self, obj: Any, name: str, phase: str, *, only_without_grad: bool = False) -> None:
        import torch

        inner = getattr(obj, name)

        def timed(*a, **kw):
            if only_without_grad and torch.is_grad_enabled():
                return inner(*a, **kw)
            start = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                self.add(phase, time.perf_counter() - start)

        setattr(obj, name, timed)


def run_trl(args: argparse.Namespace) -> None:
    try:
        import trl
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        _report({"error": "TRL is not installed: pip install -e '.[bench]' (trl 1.16, transformers below verl's cap)"})
        return
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback

    from sent.data_contract import load_curriculum
    from sent.engines.local import _batch_order
    from sent.models import load_tokenizer
    from sent.rewards import compute_score

    cfg = _config(args)
    training = cfg.training
    table = load_curriculum(_curriculum(cfg), 1).to_pylist()
    order, _ = _batch_order(len(table), cfg)
    n_steps = args.warmup + args.steps
    rows = [table[i] for i in order[: n_steps * training.train_batch_size]]  # the local engine's prompts, in its order
    dataset = datasets.Dataset.from_list(
        [{"prompt": r["prompt"], "ground_truth": r["reward_model"]["ground_truth"]} for r in rows]
    )
    times = _PhaseTimes()

    def reward(prompts, completions, completion_ids, ground_truth, **_):
        times.tokens += sum(len(ids) for ids in completion_ids)
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [
            compute_score(
                None,
                text,
                gt,
                correct_score=training.correct_score,
                incorrect_score=training.incorrect_score,
                timeout=training.reward_timeout_s,
            )["score"]
            for text, gt in zip(texts, ground_truth, strict=True)
        ]

    micro = training.micro_batch_size
    rollout_seqs, mini_seqs = (
        training.train_batch_size * training.group_size,
        training.mini_batch_size * training.group_size,
    )
    optimizer_steps = rollout_seqs // mini_seqs * training.ppo_epochs  # per rollout batch
    trl_args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=mini_seqs // micro,
        steps_per_generation=rollout_seqs // micro,
        num_generations=training.group_size,
        max_completion_length=training.max_response_tokens,
        temperature=training.temperature,
        top_p=training.top_p,
        top_k=0,
        learning_rate=training.lr,
        adam_beta1=training.betas[0],
        adam_beta2=training.betas[1],
        weight_decay=training.weight_decay,
        lr_scheduler_type="constant",
        max_grad_norm=training.grad_clip,
        beta=training.ref_kl_coef,
        # TRL 1.16 weights the KL term by the importance ratio by default (DeepSeek-V3.2's unbiased
        # estimate); ours, verl's and the paper's is the plain k3: the same work needs it off
        use_bias_correction_kl=False,
        loss_type="dapo",
        num_iterations=training.ppo_epochs,
        scale_rewards="group" if training.norm_adv_by_std else "none",
        shuffle_dataset=False,
        max_steps=n_steps * optimizer_steps,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=cfg.seed,
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=torch.float32)
    tokenizer = load_tokenizer(cfg.model.path)

    class Stepper(TrainerCallback):
        """Reports each rollout batch's time and phases, then waits for the parent's next command."""

        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_pre_optimizer_step(self, *_, **__):
            self.optimizer_start = time.perf_counter()

        def on_optimizer_step(self, *_, **__):
            times.add("optimizer", time.perf_counter() - self.optimizer_start)

        def on_step_end(self, _args, state, control, **__):
            if state.global_step % optimizer_steps:
                return
            _report({"seconds": time.perf_counter() - self.start, "tokens": times.tokens, "phases": times.seconds})
            times.seconds, times.tokens = {}, 0
            if state.global_step < n_steps * optimizer_steps and _wait_for_command() != "step":
                control.should_training_stop = True
            self.start = time.perf_counter()

    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=trl_args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.add_callback(Stepper())
    times.wrap(trainer, "_generate_single_turn", "generate")
    times.wrap(trainer, "_calculate_rewards", "scoring")
    times.wrap(trainer, "_get_per_token_logps_and_entropies", "old_logprobs", only_without_grad=True)
    times.wrap(trainer, "compute_loss", "forward")
    times.wrap(trainer.accelerator, "backward", "backward")
    kl_check = _check_reference_kl(trainer, optimizer_steps * args.warmup) if training.ref_kl_coef > 0 else None
    print(f"TRL {trl.__version__}", file=sys.stderr)
    if _wait_for_command() == "step":
        trainer.train()
    _wait_for_command()  # the parent's quit
    _report({"peak_rss_mib": _peak_rss_mib(), "kl_check": kl_check})


def _check_reference_kl(trainer: Any, warmup_optimizer_steps: int) -> dict[str, float]:
    """During the warm-up steps (not timed), recompute the reference KL of each TRL loss call with
    our estimator (`sent.losses.kl_penalty`, k3) on TRL's own log-probabilities and compare it
    with the value TRL logs; report the largest difference at the end of the warm-up."""
    import torch

    from sent.losses import kl_penalty

    inner = trainer._compute_loss
    worst = {"diff": 0.0, "trl": 0.0, "calls": 0}

    def checked(model, inputs):
        loss = inner(model, inputs)
        if trainer.state.global_step >= warmup_optimizer_steps:
            return loss
        with torch.no_grad():
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, inputs["completion_ids"].size(1))
            m = inputs["completion_mask"].float()
            ours = float((kl_penalty(logps, inputs["ref_per_token_logps"], "low_var_kl") * m).sum() / m.sum())
        theirs = float(trainer._metrics["train"]["kl"][-1])
        worst.update(diff=max(worst["diff"], abs(ours - theirs)), trl=max(worst["trl"], theirs))
        worst["calls"] += 1
        return loss

    trainer._compute_loss = checked
    return worst


# ------------------------------------------------------------------------------ the parent


class Worker:
    def __init__(self, side: str, args: argparse.Namespace) -> None:
        command = [sys.executable, __file__, "--worker", side, "--config", args.config]
        command += ["--loss", args.loss] if args.loss else []
        command += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
        for override in args.set:
            command += ["--set", override]
        self.side = side
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def send(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                record = json.loads(line[len(MARK) :])
                if "error" in record:
                    raise SystemExit(f"{self.side}: {record['error']}")
                return record
        raise SystemExit(f"the {self.side} worker ended without an answer (exit {self.proc.wait()})")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(side: str, steps: list[dict[str, Any]], peak_mib: float) -> tuple[float, float]:
    seconds = _median([s["seconds"] for s in steps])
    tokens_per_s = _median([s["tokens"] / s["seconds"] for s in steps])
    split = {p: _median([s["phases"].get(p, 0.0) for s in steps]) for p in PHASES}
    split["other"] = _median([s["seconds"] - sum(s["phases"].get(p, 0.0) for p in PHASES) for s in steps])
    parts = ", ".join(f"{p} {v:.2f}" for p, v in split.items())
    print(f"{side:>5}: {seconds:6.2f} s/step  {tokens_per_s:7.0f} response tokens/s  peak RSS {peak_mib:5.0f} MiB")
    print(f"       split (median s): {parts}")
    return seconds, tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", choices=["trl"], help="run TRL's GRPOTrainer beside the local engine")
    parser.add_argument("--config", default="configs/toy.yaml")
    parser.add_argument("--loss", help="the local engine's policy loss (default: the config's training.loss)")
    parser.add_argument("--set", action="append", default=[], help="a config override for both sides (KEY=VALUE)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker", choices=["local", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (run_local if args.worker == "local" else run_trl)(args)
        return
    cfg = _config(args)
    if not (_curriculum(cfg) / "manifest.json").is_file() or not Path(cfg.model.path).is_dir():
        print("skipped: run `sent toy bootstrap` and `sent curate --config configs/toy.yaml` first")
        return
    if args.against == "trl" and importlib.util.find_spec("trl") is None:
        print("TRL is not installed: pip install -e '.[bench]' (trl 1.16, transformers below verl's cap)")
        sys.exit(2)
    sides = ["local", "trl"] if args.against else ["local"]
    workers = {side: Worker(side, args) for side in sides}
    steps: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for i in range(args.warmup + args.steps):
        for side in sides:  # interleaved: local, TRL, local, TRL, ...
            record = workers[side].send("step")
            if i >= args.warmup:
                steps[side].append(record)
    ends = {side: workers[side].send("quit") for side in sides}
    peaks = {side: end["peak_rss_mib"] for side, end in ends.items()}
    training = cfg.training
    print(
        f"workload: {training.train_batch_size} prompts x G={training.group_size}, "
        f"<= {training.max_response_tokens} response tokens, "
        f"{training.train_batch_size // training.mini_batch_size} optimizer steps per rollout and epoch, "
        f"{training.ppo_epochs} PPO epoch(s), micro-batch {training.micro_batch_size}, "
        f"reference KL {training.ref_kl_coef}; "
        f"medians of {args.steps} steps after {args.warmup} warm-up; local loss {training.loss}"
    )
    figures = {side: _summary(side, steps[side], peaks[side]) for side in sides}
    kl_check = ends.get("trl", {}).get("kl_check")
    if kl_check:
        print(
            f"reference KL (k3, beta {training.ref_kl_coef}): ours on TRL's tensors vs TRL's logged value, "
            f"largest |difference| {kl_check['diff']:.2e} over {kl_check['calls']} warm-up loss calls "
            f"(largest TRL value {kl_check['trl']:.2e})"
        )
    if args.against:
        ratio = figures["local"][1] / figures["trl"][1]
        print(f"local/TRL throughput ratio: {ratio:.2f} (tokens/s over the whole step)")


if __name__ == "__main__":
    main()
