"""The toy world: the embedded default that makes every code path run on a CPU.

No pretrained LLM can be downloaded on the development machines, so the default pipeline runs on
a world we generate: arithmetic problems with graded difficulty (`world`), a tokenizer trained
with the `tokenizers` library and saved as a Hugging Face tokenizer with a chat template
(`tokenizer`), and a ~1M-parameter Qwen2 model warm-started by supervised fine-tuning on worked
solutions that end in ``\\boxed{answer}`` (`bootstrap`). The model goes through the same chat
template, sampler, grader and losses as a real one.
"""
