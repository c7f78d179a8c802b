"""A small byte-level BPE tokenizer for the toy world, trained with the `tokenizers` library.

It uses Qwen2's own pre-tokenization (NFC, Qwen2's split pattern, byte-level), because loaders
do not take a saved tokenizer at its word: for a ``qwen2`` model, transformers' `AutoTokenizer`
(and so verl and vLLM) rebuilds a `Qwen2Tokenizer` from the vocabulary and merges with that
pipeline. Training with the same pipeline makes the rebuilt tokenizer identical to the trained
one; `bootstrap` checks it after saving. Digits stay single tokens (Qwen2's pattern splits them),
so the model sees arithmetic digit by digit; letter runs merge into words, so the paper's fixed
instruction costs a few tokens instead of ~90. ``<|im_end|>`` ends a turn (EOS); ChatML template.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_SPLIT = (  # transformers' Qwen2Tokenizer pre-tokenization pattern
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 384):
    """A `Qwen2Tokenizer` whose vocabulary and merges were trained on ``corpus``."""
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # merges as pairs and no unknown token: what transformers takes, though its annotations say strings
    loose: dict[str, Any] = {"merges": merges, "unk_token": None}
    tok = Qwen2Tokenizer(vocab=model["vocab"], eos_token=EOS, pad_token=PAD, **loose)
    tok.add_special_tokens({"additional_special_tokens": [IM_START]})
    tok.padding_side = "left"
    tok.chat_template = CHAT_TEMPLATE
    return tok
