"""A chat prompt as the model reads it: the tokenizer's chat template with the assistant's turn
opened. One function, so that curation's token budget, the toy bootstrap, and every sampler (hf,
vLLM, Ray) render a prompt the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Messages = list[dict[str, str]]


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """``messages`` through ``tokenizer``'s chat template, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_prompts(tokenizer: Any, prompts: Sequence[Messages]) -> list[str]:
    return [render_prompt(tokenizer, m) for m in prompts]
