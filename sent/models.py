"""Loading models and tokenizers, and the log-probability of given tokens.

Models load from a local directory or a hub id (``trust_remote_code`` off unless asked).
Tokenizers pad on the left, for batched generation; a tokenizer without a pad token pads with
its EOS token. Forward passes over left-padded rows get ``position_ids = cumsum(mask) - 1``, so a
row's positions do not depend on how much padding it got (TOY_NOTES.md).
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Any

import torch

from sent.errors import SentError


class ModelError(SentError, RuntimeError):
    """A model that cannot be used here: a device this machine lacks, a directory that does not load."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when there is one), else the device named; one this machine lacks is a
    `ModelError` naming ``model.device`` (torch would fail later, inside a forward pass)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModelError(f"model.device={name!r} is not a device torch knows (cpu, cuda, cuda:N, auto)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ModelError(f"model.device={name!r}, but this machine has {count} CUDA device(s); use auto or cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelNotFoundError(SentError, OSError):
    """A model or tokenizer that is neither a local directory nor loadable from the hub."""


_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _missing_model(path: str | Path, exc: Exception) -> ModelNotFoundError:
    text = str(path)
    if Path(text).exists() or not _HUB_ID_RE.match(text):
        # a local path (data/models/toy, ./ckpt, /abs/dir): say what to build or set
        hint = (
            "run `sent toy bootstrap --config configs/toy.yaml` first"
            if "models/toy" in text
            else "train or download it there"
        )
        return ModelNotFoundError(
            f"no model at {text}: {hint}, or set model.path to a model directory (or a hub id with hub access)"
        )
    return ModelNotFoundError(
        f"cannot load {text!r}: not a local directory, and the hub did not serve it ({type(exc).__name__}); "
        "download it and set model.path to the directory"
    )


def check_model_path(path: str | Path) -> None:
    """Fail before any work when ``path`` is a local path that does not exist (a hub id passes)."""
    if not Path(str(path)).exists() and not _HUB_ID_RE.match(str(path)):
        raise _missing_model(path, FileNotFoundError(str(path)))


def _from_pretrained(loader, path: str | Path, **kwargs):
    try:
        return loader.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        local = Path(str(path))
        if local.is_dir() and any(local.iterdir()):  # there, but damaged: an empty config, a cut weight file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"{path} does not load ({type(exc).__name__}: {first[:300]})") from None
        if not isinstance(exc, OSError | ValueError):
            raise
        raise _missing_model(path, exc) from exc


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, path, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ValueError(f"tokenizer at {path} has no chat template; prompts are chat messages")
    return tok


def load_model(path: str | Path, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    model = _from_pretrained(
        AutoModelForCausalLM, path, dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
    )
    return model.to(dev).eval()


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@functools.cache
def _forward_takes_logits_to_keep(model_type: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model_type.forward).parameters


def _takes_logits_to_keep(model) -> bool:
    """Whether ``model`` (or the module a ``torch.compile`` wrapper holds) takes ``logits_to_keep``."""
    model_type: Any = type(getattr(model, "_orig_mod", model))
    return _forward_takes_logits_to_keep(model_type)


def response_logits_and_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, groups: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(rows, L - start, V)`` predicting ``input_ids[:, start:]``, and those tokens'
    log-probabilities ``(rows, L - start)``, each given the tokens before it (differentiable).
    The LM head runs on those positions only, where the model takes ``logits_to_keep``.

    ``groups`` ``(rows,)``: rows with one group id share their prompt (``input_ids[:, :start]``
    and its mask, as the G responses of a GRPO group do). Each prompt then goes through the model
    once, and its keys and values are indexed out to its rows (`_shared_prompt_forward`): the
    same result to float rounding, for a fraction of the prompt's cost."""
    if groups is not None and _takes_logits_to_keep(model):
        logits = _shared_prompt_forward(model, input_ids, attention_mask, start, groups)
    else:
        keep = input_ids.shape[1] - start + 1
        extra = {"logits_to_keep": keep} if _takes_logits_to_keep(model) else {}
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_for(attention_mask), **extra
        )
        logits = out.logits[:, -keep:-1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, start:].unsqueeze(-1)).squeeze(-1)
    return logits, logp


def _shared_prompt_forward(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, groups: torch.Tensor
) -> torch.Tensor:
    """The logits of `response_logits_and_logprobs` with one prompt forward per group: the prompt
    rows give the logits of the first response token and a KV cache, whose rows are indexed out
    to every row of their group (a differentiable gather: gradients of the G rows add up in the
    prompt's); the responses then run over that cache."""
    from transformers import DynamicCache

    unique, inverse = torch.unique(groups, return_inverse=True)
    rows = torch.arange(len(groups), device=groups.device)
    first = torch.full((len(unique),), len(groups), device=groups.device).scatter_reduce(0, inverse, rows, "amin")
    inverse, first = inverse.to(input_ids.device), first.to(input_ids.device)
    prompt_mask = attention_mask[first, :start]
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids[first, :start],
        attention_mask=prompt_mask,
        position_ids=position_ids_for(prompt_mask),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    head = out.logits[:, -1:][inverse]  # predicts the first response token
    if input_ids.shape[1] - start == 1:
        return head
    cache.batch_select_indices(inverse)
    mask = attention_mask[:, :-1]  # the last token predicts nothing
    rest = model(
        input_ids=input_ids[:, start:-1],
        attention_mask=mask,
        position_ids=position_ids_for(mask)[:, start:],
        past_key_values=cache,
        use_cache=True,
    ).logits
    return torch.cat([head, rest], dim=1)


@torch.no_grad()
def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    *,
    chunk_rows: int = 16,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(rows, L - start)`` log-probabilities of ``input_ids[:, start:]`` under ``model``, each
    given the tokens before it (0 where ``attention_mask`` is 0). Rows go through in chunks;
    ``groups`` as in `response_logits_and_logprobs`."""
    out = []
    for i in range(0, input_ids.shape[0], chunk_rows):
        ids, mask = input_ids[i : i + chunk_rows], attention_mask[i : i + chunk_rows]
        chunk_groups = groups[i : i + chunk_rows] if groups is not None else None
        _, logp = response_logits_and_logprobs(model, ids, mask, start, chunk_groups)
        out.append(logp * mask[:, start:])
    return torch.cat(out)
