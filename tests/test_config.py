"""The typed configuration: every shipped YAML loads; bad input names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sent.config import loss_config
from sent.config_base import ConfigError
from sent.config_loading import load_config
from sent.losses import PolicyLossConfig

ROOT = Path(__file__).resolve().parents[1]
# files named _*.yaml are partials, loaded only through another config's `extends:`
ALL_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("_"))
PRESETS = [p for p in ALL_CONFIGS if p.parent.name == "paper"]


def test_there_are_configs():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in ALL_CONFIGS}
    assert {
        "toy.yaml",
        "paper/r1-distill-qwen-1.5b.yaml",
        "paper/qwen2.5-math-7b.yaml",
        "paper/qwen3-14b.yaml",
    } <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert isinstance(loss_config(cfg), PolicyLossConfig)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_paper_presets_carry_the_method(path):
    # METHOD.md §3-§5
    cfg = load_config(path)
    t, pl = cfg.training, cfg.training.policy_loss
    assert cfg.sampling.backend == "vllm" and cfg.sampling.n == 8 and cfg.sampling.temperature == 1.0
    assert (t.loss, t.group_size, t.lr, t.weight_decay, t.grad_clip) == ("sent", 8, 1e-6, 0.01, 1.0)
    assert (t.train_batch_size, t.mini_batch_size, t.ppo_epochs, t.epochs_per_stage) == (256, 128, 1, 5)
    assert (t.ref_kl_coef, t.ref_kl_kind, t.entropy_coeff) == (0.001, "low_var_kl", 0.0)
    assert (pl.low_entropy_fraction, pl.kl_cov_ratio, pl.ppo_kl_coef, pl.high_cov_coef, pl.low_cov_coef) == (
        0.8,
        2e-4,
        0.1,
        2.0,
        0.5,
    )
    assert pl.sent_ppo_clip is False
    assert cfg.curriculum.n_stages == 2
    assert cfg.evaluation.n == 16 and cfg.evaluation.max_new_tokens == 8000
    # curation and evaluation: data-parallel vLLM replicas on Ray Data, filling the node's GPUs
    assert cfg.sampling.executor == "ray" and cfg.evaluation.backend == "vllm"
    assert cfg.ray.replicas * cfg.sampling.tensor_parallel_size == cfg.training.verl.n_gpus_per_node == 8


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = "model: {path: m}\ndata: {train_path: d.jsonl}\n"


def test_unknown_key_names_the_key_path_and_file(tmp_path):
    p = write(tmp_path, BASE + "sampling: {n: 8, temprature: 0.7}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and "sampling.temprature: unknown key" in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    p = write(tmp_path, BASE + "training: {lr: fast}\n")
    with pytest.raises(ConfigError, match=r"training\.lr"):
        load_config(p)


def test_loss_ranges_are_checked_through_the_loss_config(tmp_path):
    p = write(tmp_path, BASE + "training: {policy_loss: {low_entropy_fraction: 1.5}}\n")
    with pytest.raises(ConfigError, match="low_entropy_fraction"):
        load_config(p)


def test_an_old_key_name_is_read_with_a_warning_and_keeps_the_cache_key(tmp_path):
    new = load_config(write(tmp_path, BASE + "semantic: {judge_timeout_s: 7}\n"))
    with pytest.warns(FutureWarning, match="'judge_timeout' is now 'judge_timeout_s'"):
        old = load_config(write(tmp_path, BASE + "semantic: {judge_timeout: 7}\n"))
    assert old.semantic.judge_timeout_s == new.semantic.judge_timeout_s == 7.0
    # the digest keeps the old name: a curation cached before the rename is still found
    assert old.section_digest("semantic") == new.section_digest("semantic")
    assert "judge_timeout" in new.section_dump("semantic") and "judge_timeout_s" not in new.section_dump("semantic")
    other = load_config(write(tmp_path, BASE + "semantic: {judge_timeout_s: 8}\n"))
    assert other.section_digest("semantic") != new.section_digest("semantic")
    with pytest.raises(ConfigError, match="'judge_timeout' is the old name of 'judge_timeout_s'"):
        load_config(write(tmp_path, BASE + "semantic: {judge_timeout: 7, judge_timeout_s: 7}\n"))


def test_missing_file_and_missing_section(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"model: Field required"):
        load_config(write(tmp_path, "data: {train_path: d}\n"))


def test_overrides_are_typed_and_recorded(tmp_path):
    cfg = load_config(
        write(tmp_path, BASE),
        [
            "sampling.n=4",
            "training.policy_loss.kl_cov_ratio=1e-3",
            "evaluation.k=[1, 2]",
            "curriculum.n_stages=3",
        ],
    )
    assert cfg.sampling.n == 4 and cfg.training.policy_loss.kl_cov_ratio == 1e-3
    assert cfg.evaluation.k == [1, 2] and cfg.curriculum.n_stages == 3
    assert cfg.overrides == [
        "sampling.n=4",
        "training.policy_loss.kl_cov_ratio=1e-3",
        "evaluation.k=[1, 2]",
        "curriculum.n_stages=3",
    ]
    with pytest.raises(ConfigError, match=r"sampling\.nn: unknown key"):
        load_config(write(tmp_path, BASE), ["sampling.nn=4"])
    with pytest.raises(ConfigError, match=r"not key\.path=value"):
        load_config(write(tmp_path, BASE), ["sampling.n"])


def test_config_is_frozen(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        cfg.sampling.n = 3  # type: ignore[misc]


def test_threshold_curriculum_needs_thresholds(tmp_path):
    with pytest.raises(ConfigError, match="thresholds"):
        load_config(write(tmp_path, BASE + "curriculum: {method: threshold, n_stages: 3, thresholds: [0.5]}\n"))


def test_prompt_messages_follow_the_paper():
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    msgs = cfg.prompt.messages("Compute 1+2.")
    assert msgs == [
        {
            "role": "user",
            "content": "Compute 1+2.\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]


def test_loading_a_config_imports_neither_torch_nor_the_losses():
    """`sent.loss_config` holds the loss coefficients, so a config check does not pay for torch."""
    import subprocess
    import sys

    code = (
        "import sys; from sent.config_loading import load_config; "
        f"load_config({str(ROOT / 'configs' / 'toy.yaml')!r}); "
        "print(sorted(m for m in ('torch', 'sent.losses', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _fields(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _fields(arg, f"{prefix}{name}.")


def test_every_config_key_is_described():
    from sent.config import SentConfig

    keys = dict(_fields(SentConfig))
    assert len(keys) > 130  # every section is walked, policy_loss and verl included
    assert [k for k, f in keys.items() if not (f.description or "").strip()] == []


def test_the_config_reference_in_configs_readme_is_up_to_date():
    from sent.config_reference import BEGIN, END, reference

    text = (ROOT / "configs" / "README.md").read_text(encoding="utf-8")
    block = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert block == reference(), "run: python -m sent.config_reference --write configs/README.md"


def test_the_reference_lists_every_key_once():
    from sent.config import SentConfig
    from sent.config_reference import reference

    rows = [line.split("|")[1].strip().strip("`") for line in reference().splitlines() if line.startswith("| `")]
    # semantic.scoring_model's keys are model's, listed once under `model`
    expected = [k for k, _ in _fields(SentConfig) if not k.startswith("semantic.scoring_model.")]
    assert len(rows) == len(set(rows)) and sorted(rows) == sorted(expected)


def test_a_config_extends_another_mapping_by_mapping(tmp_path):
    """Mappings merge key by key, lists and scalars replace; paths are relative to the extending file."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "_common.yaml").write_text(
        "seed: 3\nmodel: {path: m, dtype: bfloat16}\ndata: {train_path: d.jsonl}\n"
        "evaluation: {benchmarks: [aime24, amc23], n: 4}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base/_common.yaml\nmodel: {path: other}\nevaluation: {benchmarks: [math500]}\n"
    )
    cfg = load_config(tmp_path / "child.yaml", ["seed=5"])
    assert (cfg.model.path, cfg.model.dtype, cfg.data.train_path) == ("other", "bfloat16", "d.jsonl")
    assert cfg.evaluation.benchmarks == ["math500"] and cfg.evaluation.n == 4
    assert cfg.seed == 5 and cfg.source == str(tmp_path / "child.yaml")


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("missing.yaml", r"child.yaml: extends 'missing.yaml', but .*missing.yaml does not exist"),
        ("child.yaml", r"child.yaml: extends makes a cycle: .*child.yaml -> .*child.yaml"),
        ("[a.yaml, b.yaml]", r"extends must be the path of one config file, got \['a.yaml', 'b.yaml'\]"),
    ],
)
def test_a_bad_extends_names_the_file(tmp_path, extends, message):
    (tmp_path / "child.yaml").write_text(f"extends: {extends}\nmodel: {{path: m}}\ndata: {{train_path: d}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "child.yaml")


def test_the_paper_presets_keep_only_their_differences():
    # each preset is its model, response budget and parallelism over configs/paper/_base.yaml
    for path in PRESETS:
        lines = [x for x in path.read_text().splitlines() if x.strip() and not x.lstrip().startswith("#")]
        assert lines[0] == "extends: _base.yaml" and len(lines) <= 15, path.name


# settings two phases share: one source (sent.config.FOLLOWS) ------------------------------------


def test_shared_settings_follow_their_source_unless_set(tmp_path):
    path = write(
        tmp_path,
        "model: {path: m}\ndata: {train_path: d.jsonl, max_prompt_tokens: 300}\n"
        "sampling: {backend: vllm, max_new_tokens: 700}\n",
    )
    cfg = load_config(path)
    # each follower takes its source's value: the prompts curation accepts, the budget the SE was
    # measured at, the sampler of the curation
    assert cfg.training.max_prompt_tokens == 300
    assert cfg.training.max_response_tokens == 700
    assert cfg.evaluation.backend == "vllm"
    own = load_config(
        path, ["training.max_prompt_tokens=512", "training.max_response_tokens=64", "evaluation.backend=hf"]
    )
    assert (own.training.max_prompt_tokens, own.training.max_response_tokens, own.evaluation.backend) == (512, 64, "hf")
    # what was resolved is what is recorded and digested
    assert cfg.public_dump()["training"]["max_response_tokens"] == 700
    assert cfg.section_digest("training") != own.section_digest("training")


def test_rollouts_that_cannot_take_every_curated_prompt_are_refused(tmp_path):
    path = write(tmp_path, "model: {path: m}\ndata: {train_path: d.jsonl, max_prompt_tokens: 300}\n")
    with pytest.raises(ConfigError, match=r"training\.max_prompt_tokens=299 is below data\.max_prompt_tokens=300"):
        load_config(path, ["training.max_prompt_tokens=299"])
    assert load_config(path, ["training.max_prompt_tokens=300"]).training.max_prompt_tokens == 300


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_set_each_shared_setting_once(path):
    # a follower set to its source's value is a copy that can drift: leave it out
    from sent.config import FOLLOWS
    from sent.config_loading import _read_with_bases

    raw, cfg = _read_with_bases(path), load_config(path)
    for (section, key), (source, source_key) in FOLLOWS.items():
        mine = raw.get(section, {}).get(key)
        assert mine != getattr(getattr(cfg, source), source_key), f"{section}.{key} repeats {source}.{source_key}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["evaluation.n=4", "evaluation.k=[1,8]"], r"evaluation\.k \[8\] above evaluation\.n=4"),
        (["training.group_size=1"], r"training\.group_size: Input should be greater than or equal to 2"),
        (["training.train_batch_size=6", "training.mini_batch_size=4"], "multiple of mini_batch_size"),
        (["training.engine=verl", "training.compile=true"], "compile is a local-engine setting"),
        (["training.engine=verl", "training.old_logprobs=recompute"], "old_logprobs='recompute' is a local-engine"),
        (["training.engine=verl", "training.train_samples=positive"], "train_samples='positive' is a local-engine"),
        (["curriculum.online_filter=true"], "online_filter filters by the online SE of mode 'online'"),
        (["curriculum.mode=rescored", "curriculum.n_stages=1"], "mode 'rescored' re-stages .* n_stages >= 2"),
        (["data.max_prompt_tokens=256", "training.max_prompt_tokens=128"], "rollouts would drop prompts"),
    ],
)
def test_settings_that_contradict_each_other_get_one_clear_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(ROOT / "configs" / "toy.yaml", overrides)
    assert str(err.value).count("\n  ") == 1  # one error, not a cascade


def test_a_section_recorded_by_an_earlier_version_compares_by_what_it_makes():
    """A curation's manifest records its sections as the version of the day wrote them. Read back
    by today's schema (an old key name, a key added since, a setting of where work runs), it
    equals today's config where the work is the same, and differs where it is not."""
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    old_semantic = {k: v for k, v in cfg.semantic.model_dump(mode="json").items() if k != "verify_workers"}
    old_semantic["judge_timeout"] = old_semantic.pop("judge_timeout_s")  # the name before the rename
    assert cfg.recorded_section_dump("semantic", old_semantic) == cfg.section_dump("semantic")
    ray_executor = {**cfg.sampling.model_dump(mode="json"), "executor": "ray"}  # where, not what
    assert cfg.recorded_section_dump("sampling", ray_executor) == cfg.section_dump("sampling")
    other_judge = {**old_semantic, "judge": "exact"}
    assert cfg.recorded_section_dump("semantic", other_judge) != cfg.section_dump("semantic")
    assert cfg.recorded_section_dump("semantic", {"judge": "no such judge"}) is None
