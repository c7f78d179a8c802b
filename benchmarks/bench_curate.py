"""Curation costs (issue 3 targets): the per-problem overhead of curation excluding generation
(>= 200 problems/s at N = 8), writing the curriculum shards of 1M scored problems (<= 10 s), and
the `hf` sampler's tokens/s on the toy model (needs `sent toy bootstrap`).

``--executors`` (issue 14) times the whole curation of the same toy problems with
``sampling.executor: local`` and ``ray`` (1 actor holding this process's torch threads, then 2
actors of 1 CPU), at each of ``--problems``' sizes, interleaved over ``--repeats`` rounds in one
run; fits each executor's time as a fixed cost plus a time per problem, and says from which size
Ray stays within 15 % of the local loop; then a local Ray's start-up and time to the first finished
chunk. Each ray figure includes starting and stopping its local Ray.

The overhead run replaces generation by canned completions (realistic texts: mostly the right
answer in several spellings, wrong answers, missing answers) and times the whole `curate` call:
reading, validation with prompt tokenisation, extraction, grading, clustering, entropies,
stages, Parquet writes, plots and the manifest.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sent.config_loading import load_config  # noqa: E402
from sent.curate import curate  # noqa: E402
from sent.sampling import Completion  # noqa: E402
from sent.sampling.base import Settings  # noqa: E402
from sent.staging import write_stages  # noqa: E402

N = 8
PROBLEMS = 2000
SHARD_ROWS = 1_000_000


class CannedSampler:
    """Answers without a model: each completion boxes the right answer, a respelling of it, a
    wrong number, or nothing."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.seconds = 0.0

    def generate(self, prompts, settings: Settings, *, seed: int, start: int = 0) -> list[list[Completion]]:
        t0 = time.perf_counter()
        rng = random.Random(seed)
        out = []
        for messages in prompts:
            problem = messages[-1]["content"].split("\n")[0]
            answer = int(self.answers[problem])
            choices = [
                str(answer),
                f"{answer}.0",
                f"\\frac{{{2 * answer}}}{{2}}",
                str(answer + rng.randint(1, 9)),
            ]
            completions = []
            for _ in range(settings.n):
                if rng.random() < 0.1:
                    text = "I am not sure how to finish this"
                else:
                    text = f"{problem.removeprefix('Compute ')} so the result is \\boxed{{{rng.choice(choices)}}}"
                completions.append(Completion(text, tuple(range(20)), -rng.uniform(1, 20), "stop"))
            out.append(completions)
        self.seconds += time.perf_counter() - t0
        return out


def bench_overhead(tmp: Path) -> None:
    from sent.toy.world import generate_world, write_jsonl

    train, _ = generate_world(0, PROBLEMS // 5 + 1, 10)
    train = train[:PROBLEMS]
    path = write_jsonl(train, tmp / "problems.jsonl")
    cfg = load_config(ROOT / "configs" / "toy.yaml", [f"data.train_path={path}", "sampling.chunk_size=500"])
    if not Path(cfg.model.path).exists():
        print(f"skipped overhead: run `sent toy bootstrap` first (needs the toy tokenizer at {cfg.model.path})")
        return
    sampler = CannedSampler({p.problem: p.answer for p in train})
    t0 = time.perf_counter()
    curate(cfg, out=tmp / "run", sampler=sampler)
    total = time.perf_counter() - t0
    overhead = total - sampler.seconds
    print(
        f"curation overhead excluding generation: {len(train) / overhead:8.0f} problems/s "
        f"({len(train)} problems, N = {N}, {overhead:.2f} s)"
    )


def bench_shards(tmp: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from sent.data_contract import SCORES_SCHEMA

    cfg = load_config(ROOT / "configs" / "toy.yaml")
    rng = np.random.default_rng(0)
    n = SHARD_ROWS
    index = np.arange(n)
    scores = pa.table(
        {
            "index": index,
            "id": [f"p{i}" for i in index],
            "data_source": ["toy"] * n,
            "problem": [f"Compute {i}+1." for i in index],
            "answer": [str(i + 1) for i in index],
            "semantic_entropy": rng.random(n) * 2,
            "weighted_semantic_entropy": rng.random(n) * 2,
            "n_classes": rng.integers(1, 9, n).astype(np.int32),
            "pass_rate": rng.random(n),
            "answered_rate": rng.random(n),
            "mean_tokens": rng.random(n) * 50,
            "filtered": np.zeros(n, bool),
            "stage": (1 + index % 2).astype(np.int32),
        }
    ).cast(SCORES_SCHEMA)
    t0 = time.perf_counter()
    write_stages(cfg, scores, tmp / "stages")
    print(f"writing curriculum shards for {n:,} scored problems: {time.perf_counter() - t0:6.2f} s")


def bench_sampler() -> None:
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    if not Path(cfg.model.path).exists():
        print("skipped hf sampler: run `sent toy bootstrap` first")
        return
    from sent.sampling.hf import HFSampler

    sampler = HFSampler(model_path=cfg.model.path, device="cpu", dtype="float32", batch_size=128, progress=False)
    prompts = [cfg.prompt.messages(f"Compute {a}+{b}-{a}.") for a in range(10, 26) for b in range(8)]
    sampler.generate(prompts[:8], Settings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=64), seed=0)  # warm-up
    t0 = time.perf_counter()
    out = sampler.generate(prompts, Settings(n=N, temperature=1.0, top_p=1.0, max_new_tokens=64), seed=1)
    seconds = time.perf_counter() - t0
    tokens = sum(c.n_tokens for cs in out for c in cs)
    print(
        f"hf sampler, toy model, {len(prompts)} prompts x {N}: {tokens / seconds:8.0f} generated tokens/s, "
        f"{len(prompts) * N / seconds:6.0f} responses/s"
    )


EXECUTORS = {
    "local": [],
    "ray, 1 actor": ["sampling.executor=ray", "ray.replicas=1"],  # + cpus_per_actor = torch threads
    "ray, 2 actors": ["sampling.executor=ray", "ray.replicas=2", "ray.cpus_per_actor=1"],
}


def bench_executors(tmp: Path, sizes: list[int], repeats: int) -> None:
    import statistics

    import torch

    cfg = load_config(ROOT / "configs" / "toy.yaml")
    if not Path(cfg.model.path).exists():
        print("skipped executors: run `sent toy bootstrap` first")
        return
    threads = torch.get_num_threads()
    common = ["sampling.chunk_size=64", "curriculum.drop_zero_signal=false"]
    seconds: dict[tuple[str, int], list[float]] = {(name, n): [] for n in sizes for name in EXECUTORS}
    for r in range(repeats):
        for problems in sizes:
            for name, overrides in EXECUTORS.items():
                extra = [f"ray.cpus_per_actor={threads}"] if name == "ray, 1 actor" else []
                run_cfg = load_config(ROOT / "configs" / "toy.yaml", [*common, *overrides, *extra])
                t0 = time.perf_counter()
                slug = name.replace(", ", "-").replace(" ", "")
                curate(run_cfg, out=tmp / f"{slug}-{problems}-{r}", limit=problems)
                seconds[(name, problems)].append(time.perf_counter() - t0)
    print(
        f"curation of toy problems, N = {cfg.sampling.n}, chunks of 64, {threads} torch threads "
        f"(median of {repeats}, interleaved):"
    )
    median = {key: statistics.median(times) for key, times in seconds.items()}
    for (name, problems), times in seconds.items():
        m, base = median[(name, problems)], median[("local", problems)]
        print(
            f"  {problems:6d} problems  {name:14s} {problems / m:7.2f} problems/s  {m:7.1f} s  "
            f"time/local {m / base:5.2f}  (runs: {', '.join(f'{t:.1f}' for t in times)})"
        )
    if len(sizes) >= 2:
        _fixed_and_rate(sizes, median)
    _ray_startup(threads)


def _fixed_and_rate(sizes: list[int], median: dict[tuple[str, int], float]) -> None:
    """A line through each executor's medians: seconds = fixed + per_problem x problems, and the
    size from which Ray's time stays within 15 % of the local loop's."""
    import numpy as np

    fits = {}
    for name in EXECUTORS:
        per_problem, fixed = np.polyfit(sizes, [median[(name, n)] for n in sizes], 1)
        fits[name] = (fixed, per_problem)
        print(f"  {name:14s} fixed {fixed:5.1f} s + {1000 * per_problem:5.2f} ms a problem")
    fixed_local, rate_local = fits["local"]
    for name, (fixed, rate) in fits.items():
        if name == "local":
            continue
        margin = 1.15 * rate_local - rate
        where = (
            f"from {max(0.0, (fixed - 1.15 * fixed_local) / margin):,.0f} problems"
            if margin > 0
            else "never (its per-problem time alone is above 1.15x)"
        )
        print(f"  {name}: per-problem time {rate / rate_local:.2f}x the local loop's; within 15 % {where}")


def _ray_startup(threads: int) -> None:
    """A local Ray's start and stop, and the time to the first finished chunk of a 1-actor pipeline."""
    import ray

    from sent.models import load_tokenizer
    from sent.problems import read_rows, validate_rows
    from sent.sampling.ray_data import sample_chunks

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - t0
    ray.shutdown()
    cfg = load_config(
        ROOT / "configs" / "toy.yaml", ["sampling.executor=ray", "ray.replicas=1", f"ray.cpus_per_actor={threads}"]
    )
    path = Path(cfg.data.train_path)
    problems, _ = validate_rows(cfg, path, list(read_rows(path, limit=128)), load_tokenizer(cfg.model.path))
    first: list[float] = []
    t0 = time.perf_counter()
    sample_chunks(cfg, {0: problems[:64], 1: problems[64:]}, lambda ci, table: first.append(time.perf_counter() - t0))
    print(
        f"local Ray: start and stop {started:.1f} s; 1-actor pipeline, time to the first of 2 chunks of 64: "
        f"{first[0]:.1f} s (Ray start, model load, sampling, grading)"
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executors", action="store_true", help="only the local against Ray comparison")
    parser.add_argument(
        "--problems", default="512,2000", help="toy problems a curation, comma-separated sizes (--executors)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (--executors)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.executors:
            bench_executors(tmp, [int(n) for n in args.problems.split(",")], args.repeats)
            return
        bench_overhead(tmp)
        bench_shards(tmp)
        bench_sampler()


if __name__ == "__main__":
    main()
