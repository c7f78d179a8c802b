"""`sent toy bootstrap`: build the toy world and warm-start its tiny model, once.

Steps: generate the train/test problems; train the tokenizer on chat-formatted examples; build a
Qwen2-architecture causal LM (about 1M parameters with the defaults: hidden 128, MLP 512,
4 layers, 4 heads, tied embeddings, vocabulary = the tokenizer's); supervised fine-tuning on
worked solutions (loss on response tokens only; AdamW, linear warm-up then cosine decay);
greedy accuracy by level on the test split; save atomically. The result is cached under
``toy.model_dir`` with the digest of everything that shapes it, so a rerun with the same
settings returns at once, and the same seed rebuilds the same model.

SFT is stopped early on purpose (TOY_NOTES.md): the model should solve easy problems often and
hard ones rarely, so that sampled answers show a real spread of semantic entropy and GRPO has
headroom.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sent import interrupt
from sent.chat import render_prompt
from sent.config import PromptConfig, ToyConfig
from sent.toy.tokenizer import train_tokenizer
from sent.toy.world import ToyProblem, generate_world, write_jsonl

logger = logging.getLogger(__name__)
BOOTSTRAP_FORMAT = 4


@dataclass(frozen=True)
class BootstrapResult:
    model_dir: Path
    train_path: Path
    test_path: Path
    rl_path: Path
    accuracy_by_level: dict[str, float]
    seconds: float
    n_parameters: int
    cached: bool


def _digest(cfg: ToyConfig, prompt: PromptConfig) -> str:
    # rl_levels only selects problems for RL (rl.jsonl); the model does not depend on it
    toy = cfg.model_dump(exclude={"rl_levels"})
    payload = {"toy": toy, "prompt": prompt.model_dump(), "format": BOOTSTRAP_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_model(tokenizer, cfg: ToyConfig):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)


def _examples(problems: list[ToyProblem], tokenizer, prompt: PromptConfig) -> list[tuple[list[int], list[int]]]:
    prompts = [render_prompt(tokenizer, prompt.messages(p.problem)) for p in problems]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer([p.solution for p in problems], add_special_tokens=False)["input_ids"]
    return [(pi, [*ai, tokenizer.eos_token_id]) for pi, ai in zip(prompt_ids, answer_ids, strict=True)]


def _batch(examples, pad_id: int):
    length = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, (p, a) in enumerate(examples):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(a)
        mask[i, : len(seq)] = 1
    return ids, mask, labels


def supervised_finetune(model, tokenizer, problems, prompt: PromptConfig, cfg: ToyConfig, *, log_every: int = 100):
    """Response-only cross-entropy on worked solutions; returns the final loss."""
    examples = _examples(problems, tokenizer, prompt)
    by_level: dict[int, list] = {}
    for p, ex in zip(problems, examples, strict=True):
        by_level.setdefault(p.level, []).append(ex)
    pools = list(by_level.values())
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < cfg.sft_warmup:
            return (step + 1) / cfg.sft_warmup
        progress = (step - cfg.sft_warmup) / max(1, cfg.sft_steps - cfg.sft_warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    loss_value = float("nan")
    t0 = time.perf_counter()
    for step in range(cfg.sft_steps):
        interrupt.check(f"at SFT step {step} of the toy bootstrap (a rerun starts it again)")
        # levels drawn uniformly: L1 has 150 distinct training problems, the others thousands
        picks = [rng.choice(rng.choice(pools)) for _ in range(cfg.sft_batch_size)]
        ids, mask, labels = _batch(picks, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
        if (step + 1) % log_every == 0 or step + 1 == cfg.sft_steps:
            logger.info(
                "sft step %d/%d loss %.4f (%.1fs)",
                step + 1,
                cfg.sft_steps,
                loss_value,
                time.perf_counter() - t0,
            )
    model.eval()
    return loss_value


def accuracy_by_level(model, tokenizer, problems: list[ToyProblem], prompt: PromptConfig) -> dict[str, float]:
    """Greedy accuracy per level, graded by `sent.rewards.grade`."""
    from sent.rewards import grade
    from sent.sampling.base import Settings
    from sent.sampling.hf import HFSampler

    sampler = HFSampler(model, tokenizer, batch_size=256, progress=False)
    greedy = Settings(n=1, temperature=0.0, top_p=1.0, max_new_tokens=64)
    outs = sampler.generate([prompt.messages(p.problem) for p in problems], greedy, seed=0)
    by_level: dict[int, list[bool]] = {}
    for p, completions in zip(problems, outs, strict=True):
        by_level.setdefault(p.level, []).append(grade(completions[0].text, p.answer))
    return {f"L{k}": sum(v) / len(v) for k, v in sorted(by_level.items())}


def _write_rl_split(train_path: Path, rl_path: Path, levels: list[int]) -> None:
    """The training problems of the RL levels, in the (shuffled) order of train.jsonl."""
    keep = set(levels)
    lines = [ln for ln in train_path.read_text(encoding="utf-8").splitlines() if json.loads(ln)["level"] in keep]
    tmp = rl_path.with_name(rl_path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    tmp.replace(rl_path)


def _check_reload(tokenizer, path: Path, texts: list[str]) -> None:
    """The saved tokenizer, loaded the way verl and vLLM load it, must tokenize as trained."""
    from sent.models import load_tokenizer

    loaded = load_tokenizer(path)
    for text in texts:
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        theirs = loaded(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            raise RuntimeError(f"the saved toy tokenizer loads as {type(loaded).__name__} and tokenizes differently")


def bootstrap(cfg: ToyConfig, prompt: PromptConfig, *, force: bool = False) -> BootstrapResult:
    """Build (or reuse) the toy world and model described by ``cfg``."""
    model_dir, data_dir = Path(cfg.model_dir), Path(cfg.data_dir)
    train_path, test_path = data_dir / "train.jsonl", data_dir / "test.jsonl"
    rl_path = data_dir / "rl.jsonl"
    marker = model_dir / "bootstrap.json"
    digest = _digest(cfg, prompt)
    if marker.is_file() and not force:
        info = json.loads(marker.read_text())
        if info.get("digest") == digest and train_path.is_file() and test_path.is_file():
            logger.info("toy model up to date at %s", model_dir)
            _write_rl_split(train_path, rl_path, cfg.rl_levels)
            return BootstrapResult(
                model_dir,
                train_path,
                test_path,
                rl_path,
                info["accuracy_by_level"],
                info["seconds"],
                info["n_parameters"],
                cached=True,
            )

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train, test = generate_world(cfg.seed, cfg.train_per_level, cfg.test_per_level)
    write_jsonl(train, train_path)
    write_jsonl(test, test_path)
    _write_rl_split(train_path, rl_path, cfg.rl_levels)
    corpus = [
        f"<|im_start|>user\n{prompt.template.format(problem=p.problem)}<|im_end|>\n<|im_start|>assistant\n{p.solution}"
        for p in train
    ]
    tokenizer = train_tokenizer(corpus, vocab_size=cfg.vocab_size)
    model = build_model(tokenizer, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("toy model: %d parameters, vocabulary %d", n_params, len(tokenizer))
    supervised_finetune(model, tokenizer, train, prompt, cfg)
    rng = random.Random(cfg.seed)
    eval_set = []
    for level in sorted({p.level for p in test}):
        pool = [q for q in test if q.level == level]
        eval_set += rng.sample(pool, min(cfg.eval_per_level, len(pool)))
    accuracy = accuracy_by_level(model, tokenizer, eval_set, prompt)
    seconds = time.perf_counter() - t0

    # atomic publish: write beside, then swap the directory in; the marker goes last
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    _check_reload(tokenizer, tmp, corpus[:50])
    old = model_dir.with_name(model_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if model_dir.exists():
        model_dir.rename(old)
    tmp.rename(model_dir)
    shutil.rmtree(old, ignore_errors=True)
    info = {
        "digest": digest,
        "accuracy_by_level": accuracy,
        "seconds": seconds,
        "n_parameters": n_params,
        "toy": cfg.model_dump(),
        "train_path": str(train_path),
        "test_path": str(test_path),
    }
    marker.write_text(json.dumps(info, indent=2))
    logger.info("toy model ready at %s in %.0fs; greedy accuracy %s", model_dir, seconds, accuracy)
    return BootstrapResult(model_dir, train_path, test_path, rl_path, accuracy, seconds, n_params, cached=False)
