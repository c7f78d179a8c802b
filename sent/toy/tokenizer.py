"""A small BPE tokenizer for the toy world, trained with the `tokenizers` library.

Digits and punctuation stay single tokens (so the model sees arithmetic digit by digit);
letter runs may merge into words (so the fixed instruction of the paper's prompt costs a few
tokens instead of ~90). The vocabulary is exactly the trained one: padding it with unused ids
lets sampling emit ids that decode to nothing (TOY_NOTES.md). Saved as a Hugging Face
`PreTrainedTokenizerFast` with a ChatML chat template; ``<|im_end|>`` ends a turn (EOS).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, EOS, IM_START, UNK = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|unk|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 256):
    """A `PreTrainedTokenizerFast` trained on ``corpus`` (every printable ASCII character is in
    the vocabulary, so any problem text can be encoded)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[A-Za-z]+|[^A-Za-z]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, IM_START, UNK],
        initial_alphabet=list(string.printable),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tokenizer, path: Path) -> None:
    tokenizer.save_pretrained(str(path))
