"""vLLM replicas through ``ray.data.llm`` (``sampling.backend: vllm`` with ``sampling.executor: ray``).

The processor gets one row per response, as the local ``vllm`` sampler sends one request per
response (`sent.sampling.vllm`): the chat-templated prompt and ``SamplingParams`` with ``n=1`` and
the response's own seed (`sent.sampling.base.request_seed`), so both executors ask vLLM for the
same thing. ``ray.data.llm`` keeps one output per request (``vLLMOutputData``: tokens, text,
per-token log-probabilities, no finish reason), which is why N is N requests. The processor's own
chat-template, tokenize and detokenize stages are off: the template is applied here with the
model's tokenizer, the engine tokenizes the text as ``LLM.generate`` does, and detokenizes.

Each output row is mapped back to a `Completion` (`completion_row`): the log-probability is the sum
of the sampled tokens' (what vLLM's ``cumulative_logprob`` holds), the finish reason is inferred
(``length`` when the budget is used up without an end-of-sequence token). The rows are regrouped
into their pieces in the driver (`regroup`).

The pieces run with ``ray.replicas`` engines (``concurrency``), each ``sampling.tensor_parallel_size``
GPUs wide, ``ray.batch_size`` requests a batch. vLLM cannot run on the development machine (no CPU
wheel on PyPI): the tests check the processor config against ``ray.data.llm``'s real config class,
the request rows and output mapping against its real ``vLLMOutputData``, and the whole path with a
stand-in engine.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from importlib import metadata
from typing import TYPE_CHECKING, Any

from sent.chat import render_prompts
from sent.sampling.base import Completion, Settings
from sent.sampling.pieces import Piece, RayExecutorError, completions_from
from sent.sampling.vllm import request_params

if TYPE_CHECKING:
    from sent.config import ModelConfig, SentConfig

logger = logging.getLogger(__name__)

INSTALL = (
    "ray.data.llm runs vLLM replicas: pip install -e '.[gpu]' (verl[vllm] with vllm 0.24 and ray[data,llm] "
    "below 2.56, whose llm extra admits that vllm)"
)


def check_installed() -> None:
    """Refuse early when ``ray.data.llm`` cannot be imported; warn when the installed vLLM is not
    the one the installed Ray's ``llm`` extra asks for (ray 2.56 and later pin other releases, 2.60
    vllm 0.29.0; verl 0.9 pins 0.24)."""
    try:
        import ray.data.llm  # noqa: F401
    except ImportError as exc:
        raise RayExecutorError(f"{INSTALL} ({exc})") from None
    problem = vllm_mismatch()
    if problem:
        logger.warning("%s", problem)


def vllm_mismatch(vllm_version: str | None = None) -> str | None:
    """What is wrong between the installed vLLM (or ``vllm_version``) and the installed Ray's
    ``llm`` extra, or None when they agree (or there is no vLLM to compare)."""
    from packaging.requirements import Requirement

    if vllm_version is None:
        try:
            vllm_version = metadata.version("vllm")
        except metadata.PackageNotFoundError:
            return None
    for text in metadata.requires("ray") or []:
        req = Requirement(text)
        for_llm = req.name == "vllm" and req.marker is not None and req.marker.evaluate({"extra": "llm"})
        if for_llm and not req.specifier.contains(vllm_version, prereleases=True):
            return (
                f"ray {metadata.version('ray')}'s llm extra asks for vllm{req.specifier}, but vllm "
                f"{vllm_version} is installed (verl pins its own); {INSTALL}"
            )
    return None


def processor_config(cfg: SentConfig, model: ModelConfig):
    """The ``vLLMEngineProcessorConfig`` of ``model``'s replicas."""
    from ray.data.llm import vLLMEngineProcessorConfig

    from sent.sampling.configured import max_model_len
    from sent.sampling.vllm_cpu import engine_options

    sampling, rc = cfg.sampling, cfg.ray
    fields = vLLMEngineProcessorConfig.model_fields
    # the template is applied here and the engine tokenizes and detokenizes: no CPU stages around
    # it (stage configs in newer Rays, boolean flags in older ones)
    if "chat_template_stage" in fields:
        options: dict[str, Any] = {"chat_template_stage": False, "tokenize_stage": False, "detokenize_stage": False}
    else:
        options = {"apply_chat_template": False, "tokenize": False, "detokenize": False}
    if "log_engine_metrics" in fields:  # ray 2.60 has it, older ones may not
        options["log_engine_metrics"] = False  # it needs a metrics port on ray.init
    return vLLMEngineProcessorConfig(
        model_source=str(model.path),
        engine_kwargs={
            "tokenizer": str(model.tokenizer or model.path),
            "tensor_parallel_size": sampling.tensor_parallel_size,
            "gpu_memory_utilization": sampling.gpu_memory_utilization,
            "dtype": model.dtype,
            "trust_remote_code": model.trust_remote_code,
            "max_model_len": max_model_len(cfg),
            "seed": cfg.seed,
            "enable_prefix_caching": True,  # the N requests of a prompt share its KV
            **engine_options(sampling.cpu_kv_cache_gib),
        },
        concurrency=rc.replicas,
        batch_size=rc.batch_size,
        runtime_env=rc.runtime_env,
        **options,
    )


def request_rows(pieces: Sequence[Piece], settings: Settings, templated: Sequence[Sequence[str]]) -> list[dict]:
    """One row per response: piece key, prompt position in the piece, sample, prompt text and its
    ``sampling_params``. ``templated[j][i]``: piece j's prompt i with the chat template applied."""
    rows = []
    for piece, texts in zip(pieces, templated, strict=True):
        for i, text in enumerate(texts):
            for k in range(settings.n):
                params = request_params(settings, piece.seed, piece.start + i, k)
                params["detokenize"] = True  # the engine's text, as LLM.generate gives it (the stage is off)
                rows.append({"key": piece.key, "position": i, "sample": k, "prompt": text, "sampling_params": params})
    return rows


def completion_row(row: dict[str, Any], *, max_tokens: int, eos_ids: Sequence[int], logprobs: bool) -> dict[str, Any]:
    """The processor's postprocess: a ``vLLMOutputData`` row (with the request's columns carried
    over) to the piece key, position, sample and the `Completion` as JSON."""
    tokens = [int(t) for t in row["generated_tokens"]]
    total = float("nan")
    if logprobs:
        per_token = row.get("logprobs")
        if per_token is None or len(per_token) != len(tokens):
            raise RayExecutorError(f"vLLM returned no log-probability for some tokens of {row['key']!r}")
        total = math.fsum(_sampled(entry, t) for entry, t in zip(per_token, tokens, strict=True))
    stopped = len(tokens) < max_tokens or (bool(tokens) and tokens[-1] in eos_ids)
    prompt_ids = row.get("prompt_token_ids")
    completion = Completion(
        text=str(row["generated_text"]),
        token_ids=tuple(tokens),
        logprob=total,
        finish_reason="stop" if stopped else "length",
        prompt_token_ids=tuple(int(t) for t in prompt_ids) if prompt_ids is not None else None,
    )
    return {
        "key": row["key"],
        "position": int(row["position"]),
        "sample": int(row["sample"]),
        "completion": json.dumps(asdict(completion)),
    }


def _sampled(entry: Any, token: int) -> float:
    """The sampled token's log-probability from one position's ``{token_id: {logprob, ...}}``
    (Arrow may hand the mapping back with string keys, or as (key, value) pairs)."""
    if isinstance(entry, dict):
        info = entry.get(token, entry.get(str(token)))
    else:
        info = next((v for k, v in entry if int(k) == token), None)
    if info is None:
        raise RayExecutorError(f"vLLM's log-probabilities lack the sampled token {token}")
    return float(info["logprob"])


def regroup(
    rows: Iterable[dict[str, Any]], pieces: Sequence[Piece], n: int
) -> Iterator[tuple[str, list[list[Completion]]]]:
    """Pieces back from per-response rows, each as soon as its last response arrives."""

    expected = {p.key: len(p.prompts) for p in pieces}
    found: dict[str, dict[tuple[int, int], Any]] = {key: {} for key in expected}
    for row in rows:
        key = row["key"]
        found[key][(row["position"], row["sample"])] = json.loads(row["completion"])
        if len(found[key]) == expected[key] * n:
            got = found.pop(key)
            yield key, completions_from([[got[(i, k)] for k in range(n)] for i in range(expected[key])])
    if found:
        lost = {key: expected[key] * n - len(got) for key, got in found.items()}
        raise RayExecutorError(f"the vLLM pipeline lost responses: {lost} (piece: responses missing)")


def build_processor(config, postprocess):
    """``ray.data.llm.build_processor``; the tests replace it with a stand-in engine."""
    from ray.data.llm import build_processor as build

    return build(config, postprocess=postprocess)


def stream_vllm(
    cfg: SentConfig, model: ModelConfig, pieces: Sequence[Piece], settings: Settings
) -> Iterator[tuple[str, list[list[Completion]]]]:
    """(key, completions) of each piece from ``ray.replicas`` vLLM engines; Ray must be connected."""
    import ray.data

    from sent.models import load_tokenizer

    tok = load_tokenizer(model.tokenizer or model.path, trust_remote_code=model.trust_remote_code)
    templated = [render_prompts(tok, piece.prompts) for piece in pieces]
    rows = request_rows(pieces, settings, templated)
    post = functools.partial(
        completion_row,
        max_tokens=settings.max_new_tokens,
        eos_ids=eos_token_ids(model, tok),
        logprobs=settings.logprobs,
    )
    processor = build_processor(processor_config(cfg, model), post)
    ds = processor(ray.data.from_items(rows))
    yield from regroup(ds.iter_rows(), pieces, settings.n)


def eos_token_ids(model: ModelConfig, tok) -> list[int]:
    """The tokens vLLM stops on: the tokenizer's (``tok``) end of sequence and the model's
    generation config's."""
    from transformers import GenerationConfig

    ids = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    try:
        generation = GenerationConfig.from_pretrained(str(model.path))
    except OSError:  # no generation_config.json
        generation = None
    if generation is not None and generation.eos_token_id is not None:
        eos = generation.eos_token_id
        ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return sorted(ids)
