"""One GRPO rollout as training tensors: grade each completion, lay the sequences out as
``[left-padded prompt | right-padded response]`` and compute the group advantages and the mask
of the sequences that train. The local engine's step reads only this batch.
"""

from __future__ import annotations

from typing import Any

import torch

from sent.advantages import grpo_advantages
from sent.config_training import TrainingConfig
from sent.rewards import compute_score
from sent.sampling.base import Completion


def positive_samples(advantages: torch.Tensor) -> torch.Tensor:
    """``(rows,)`` mask of the responses that train under ``train_samples: positive``: those with a
    positive advantage (right answers in a group that is not all right)."""
    return advantages > 0


def score_rollout(rows: list[dict], outs: list[list[Completion]], training: TrainingConfig) -> list[dict[str, Any]]:
    """`compute_score` of every completion, in rollout order. A group repeats answers, so each
    distinct response text of a prompt is graded once (grading is a pure function of the text)."""
    scores = []
    for row, completions in zip(rows, outs, strict=True):
        graded: dict[str, dict[str, Any]] = {}
        for c in completions:
            if c.text not in graded:
                graded[c.text] = compute_score(
                    row["data_source"],
                    c.text,
                    row["reward_model"]["ground_truth"],
                    row["extra_info"],
                    correct_score=training.correct_score,
                    incorrect_score=training.incorrect_score,
                    timeout=training.reward_timeout_s,
                )
            scores.append(graded[c.text])
    return scores


def _prompt_ids(c: Completion) -> tuple[int, ...]:
    if c.prompt_token_ids is None:
        raise ValueError("a rollout needs each completion's prompt token ids, and the sampler recorded none")
    return c.prompt_token_ids


def rollout_batch(
    outs: list[list[Completion]],
    scores: list[dict[str, Any]],
    training: TrainingConfig,
    *,
    pad_token_id: int,
    device: torch.device,
    with_logprobs: bool,
) -> dict[str, Any]:
    """The step's tensors from ``outs`` (G completions per prompt) and their ``scores``.

    ``sampled_logp`` holds the sampler's log-probabilities when ``with_logprobs`` (None
    otherwise); ``keep`` marks the sequences a loss trains on (``filter_groups`` and
    ``train_samples``); ``groups`` maps each sequence to its prompt.
    """
    group_size = training.group_size
    completions = [c for group in outs for c in group]
    prompts = [_prompt_ids(c) for c in completions]
    prompt_len = max(len(p) for p in prompts)
    response_len = max(1, max(c.n_tokens for c in completions))
    n_seqs, width = len(completions), prompt_len + response_len
    input_ids = torch.full((n_seqs, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((n_seqs, width), dtype=torch.long)
    sampled_logp = torch.zeros((n_seqs, response_len)) if with_logprobs else None
    for i, (c, p) in enumerate(zip(completions, prompts, strict=True)):
        r = c.token_ids
        input_ids[i, prompt_len - len(p) : prompt_len] = torch.tensor(p, dtype=torch.long)
        input_ids[i, prompt_len : prompt_len + len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, prompt_len - len(p) : prompt_len + len(r)] = 1
        if sampled_logp is not None:
            sampled_logp[i, : len(r)] = torch.tensor(c.token_logprobs)
    rewards = torch.tensor([s["score"] for s in scores])
    groups = torch.arange(len(outs)).repeat_interleave(group_size)
    adv = grpo_advantages(rewards, groups, norm_by_std=training.norm_adv_by_std)
    group_rewards = rewards.view(-1, group_size)
    signal = group_rewards.max(1).values != group_rewards.min(1).values
    keep = signal[groups] if training.filter_groups else torch.ones(n_seqs, dtype=torch.bool)
    if training.train_samples == "positive":
        keep = keep & positive_samples(adv)
    return {
        "input_ids": input_ids.to(device),
        "attention": attention.to(device),
        "prompt_len": prompt_len,
        "sampled_logp": sampled_logp.to(device) if sampled_logp is not None else None,
        "advantages": adv,
        "rewards": rewards,
        "acc": torch.tensor([float(s["acc"]) for s in scores]),
        "signal": signal,
        "keep": keep,
        "groups": groups,
        "reward_undecided": sum(s["undecided"] for s in scores) / n_seqs,
        "texts": [c.text for c in completions],
    }
