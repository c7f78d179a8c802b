"""Every bad input a user can hand us, in one table: each case runs the real entry point (the CLI,
`curate`, `load_config`, the evaluation reader) on a small bad file and checks the exact message,
or the exact reason kept with a rejected row. Nothing crashes with a traceback, nothing is lost
in silence.

Each case is a function ``(tiny_toy, tmp_path, capsys) -> str`` returning the message that the
user sees (an ``error:`` line, an exception's text, or a rejected row's reason); ``CASES`` maps
the case to that message exactly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sent.cli import main
from sent.config_base import ConfigError
from sent.config_loading import load_config
from sent.curate import curate
from sent.evaluation import EvaluationError, evaluate_responses, read_responses
from sent.models import load_tokenizer
from sent.problems import CurationError, read_rows, validate_rows

from sent_testing import PINNED, ROOT, toy_config

TOY = str(ROOT / "configs" / "toy.yaml")


def _jsonl(path: Path, lines: list) -> Path:
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line + b"\n")
            else:
                f.write(((line if isinstance(line, str) else json.dumps(line)) + "\n").encode())
    return path


def _reason_of(tiny_toy, tmp_path, bad_line) -> str:
    """The reason validation keeps with ``bad_line``, given between two good rows."""
    good = [{"id": "a", "problem": "Compute 1+1.", "answer": "2"}, {"id": "b", "problem": "Compute 2+2.", "answer": 4}]
    path = _jsonl(tmp_path / "in.jsonl", [good[0], bad_line, good[1]])
    cfg = toy_config(tiny_toy, f"data.train_path={path}")
    rows = list(read_rows(path))
    accepted, rejected = validate_rows(cfg, path, rows, load_tokenizer(tiny_toy.model_dir))
    assert [p.id for p in accepted] == ["a", "b"], "the good rows are kept"
    (r,) = rejected
    assert (r.source_file, r.row) == (str(path), 2), "the file and the line are named"
    return f"{r.field or '(row)'}: {r.reason}"


def _cli_error(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def _raises(exc_type, fn) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    return str(info.value)


# ------------------------------------------------------------------------------------ rows


def non_utf8_row(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, b'{"id": "x", "problem": "caf\xe9", "answer": "1"}')


def nan_answer(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, '{"id": "x", "problem": "Compute 5.", "answer": NaN}')


def infinite_answer(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, '{"id": "x", "problem": "Compute 5.", "answer": -Infinity}')


def lone_surrogate_row(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, '{"id": "x", "problem": "Compute \\ud800 + 1.", "answer": "1"}')


def ray_address_nobody_listens_on(tiny_toy, tmp_path, capsys):
    from sent.ray_address import check_ray_address

    return _raises(ConnectionError, lambda: check_ray_address("127.0.0.1:1", "ray.address", timeout=5))


def not_json_row(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, "{'id': 'x'}")


def not_an_object_row(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, "[1, 2]")


def missing_problem(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, {"id": "x", "answer": "5"})


def empty_answer(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, {"id": "x", "problem": "Compute 5.", "answer": "  "})


def problem_of_wrong_type(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, {"id": "x", "problem": ["Compute 5."], "answer": "5"})


def duplicate_id(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, {"id": "a", "problem": "Compute 7.", "answer": "7"})


def duplicate_problem(tiny_toy, tmp_path, capsys):
    return _reason_of(tiny_toy, tmp_path, {"id": "x", "problem": " COMPUTE 1+1. ", "answer": "2"})


def prompt_over_budget(tiny_toy, tmp_path, capsys):
    problem = "+".join(["1"] * 200)
    reason = _reason_of(tiny_toy, tmp_path, {"id": "x", "problem": problem, "answer": "200"})
    tok = load_tokenizer(tiny_toy.model_dir)
    messages = toy_config(tiny_toy).prompt.messages(problem)
    n = len(tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"])
    return reason.replace(f" {n} tokens", " <the chat prompt's token count> tokens")


# ------------------------------------------------------------------------------------ files and arguments


def empty_input_file(tiny_toy, tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    cfg = toy_config(tiny_toy, f"data.train_path={path}")
    message = _raises(CurationError, lambda: curate(cfg, out=tmp_path / "run"))
    assert not (tmp_path / "run").exists(), "nothing is left behind"
    return message.replace(str(path), "<file>")


def missing_input_file(tiny_toy, tmp_path, capsys):
    cfg = toy_config(tiny_toy, f"data.train_path={tmp_path / 'nope.jsonl'}")
    return _raises(CurationError, lambda: curate(cfg, out=tmp_path / "run")).replace(str(tmp_path), "<tmp>")


def limit_zero(tiny_toy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["curate", "--config", TOY, "--limit", "0", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    return capsys.readouterr().err.strip().splitlines()[-1]


def limit_negative(tiny_toy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["curate", "--config", TOY, "--limit", "-5"])
    assert not list(Path("data/runs").glob("*limit-5*")) if Path("data/runs").is_dir() else True
    return capsys.readouterr().err.strip().splitlines()[-1]


def limit_negative_in_the_library(tiny_toy, tmp_path, capsys):
    cfg = toy_config(tiny_toy)
    message = _raises(CurationError, lambda: curate(cfg, out=tmp_path / "run", limit=-5))
    assert not (tmp_path / "run").exists()
    return message


def model_not_bootstrapped(tiny_toy, tmp_path, capsys):
    err = _cli_error(
        capsys,
        ["curate", "--config", TOY, f"data.train_path={tiny_toy.rl_path}", f"model.path={tmp_path}/data/models/toy"],
    )
    return err.replace(str(tmp_path), "<tmp>")


def duplicate_yaml_key(tiny_toy, tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nmodel:\n  path: m\ndata:\n  train_path: d\ntraining:\n  lr: 1e-6\n  lr: 2e-6\n")
    return _raises(ConfigError, lambda: load_config(path)).replace(str(path), "<file>")


def unknown_config_key(tiny_toy, tmp_path, capsys):
    return _cli_error(capsys, ["curate", "--config", TOY, "sampling.bogus=1"]).replace(TOY, "<file>")


def _config_error(capsys, override: str) -> str:
    """The one line (or block) `sent curate` prints for a bad override, before any work starts."""
    return _cli_error(capsys, ["curate", "--config", TOY, override]).replace(TOY, "<file>")


def unknown_loss(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "training.loss=bogus")


def betas_out_of_range(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "training.betas=[2,3]")


def k_of_zero(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "evaluation.k=[0]")


def k_above_n(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "evaluation.k=[1,4,16]")


def template_without_problem(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "prompt.template=Solve it.")


def template_with_another_field(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "prompt.template=Solve {problem} in {language}")


def boolean_sample_count(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "sampling.n=true")


def infinite_learning_rate(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "training.lr=.inf")


def nan_reward(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "training.correct_score=.nan")


def infinite_judge_timeout(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "semantic.judge_timeout_s=.inf")


def override_with_a_python_tag(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "seed=!!python/object/apply:os.system [echo hi]")


def override_cut_short(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "seed=[1,")


def override_with_an_undefined_alias(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "seed=*a")


def override_with_a_reserved_character(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, "seed=@x")


def credentials_in_a_config_value(tiny_toy, tmp_path, capsys):
    message = _config_error(capsys, "tracking.tracking_uri=http://alice:s3cret@127.0.0.1:5000")
    assert "s3cret" not in message
    return message


_BOMB = ", ".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['x'] * 9)}]"
    for prev, name in zip(["", *"abcdefg"], "abcdefgh", strict=True)
)  # a: &a [x x 9], b: &b [*a x 9], ...: 9^8 = 43 million values from 300 bytes


def yaml_alias_bomb(tiny_toy, tmp_path, capsys):
    return _config_error(capsys, f"ray.runtime_env={{{_BOMB}}}")


# ------------------------------------------------------------------------------------ damaged state


def device_this_machine_lacks(tiny_toy, tmp_path, capsys):
    from sent.models import ModelError, resolve_device

    return re.sub(r"has \d+ CUDA", "has <n> CUDA", _raises(ModelError, lambda: resolve_device("cuda:99")))


def model_with_an_empty_config(tiny_toy, tmp_path, capsys):
    import shutil

    from sent.models import ModelError, load_model

    model = shutil.copytree(tiny_toy.model_dir, tmp_path / "model")
    (model / "config.json").write_text("")
    return _raises(ModelError, lambda: load_model(model)).replace(str(model), "<dir>")


def curation_state_that_is_a_list(tiny_toy, tmp_path, capsys):
    out = tmp_path / "cur"
    out.mkdir()
    (out / "curation.json").write_text("[]")
    message = _raises(CurationError, lambda: curate(toy_config(tiny_toy), out=out, limit=4))
    return message.replace(str(out), "<dir>")


def manifest_that_is_a_list(tiny_toy, tmp_path, capsys):
    from sent.data_contract import ContractError, load_manifest

    (tmp_path / "manifest.json").write_text("[]")
    return _raises(ContractError, lambda: load_manifest(tmp_path)).replace(str(tmp_path), "<dir>")


def manifest_without_files(tiny_toy, tmp_path, capsys):
    from sent.data_contract import SCHEMA_VERSION, ContractError, load_manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    return _raises(ContractError, lambda: load_manifest(tmp_path)).replace(str(tmp_path), "<dir>")


def training_into_a_curation_directory(tiny_toy, tmp_path, capsys):
    from sent.engines.dispatch import train_stage
    from sent.engines.stage import TrainingError

    (tmp_path / "curation.json").write_text("{}")
    (tmp_path / "stage-1").mkdir()
    call = lambda: train_stage(toy_config(tiny_toy), stage=1, curriculum_dir=tmp_path, run_dir=tmp_path, fresh=True)  # noqa: E731
    message = _raises(TrainingError, call).replace(str(tmp_path), "<dir>")
    assert (tmp_path / "stage-1").is_dir(), "the curriculum's stage was not moved aside"
    return message


def output_that_is_a_file(tiny_toy, tmp_path, capsys):
    from sent.locks import LockedError

    out = tmp_path / "a-file"
    out.write_text("")
    return _raises(LockedError, lambda: curate(toy_config(tiny_toy), out=out, limit=4)).replace(str(out), "<path>")


# ------------------------------------------------------------------------------------ evaluation


def _toy_benchmark(tiny_toy) -> tuple[dict, list[dict]]:
    problems = [json.loads(line) for line in tiny_toy.test_path.read_text().splitlines() if line.strip()]
    return {"toy_dir": str(tiny_toy.test_path.parent)}, problems


def unknown_response_ids(tiny_toy, tmp_path, capsys):
    where, problems = _toy_benchmark(tiny_toy)
    rows = [{"id": p["id"], "response": "\\boxed{1}"} for p in problems]
    path = _jsonl(tmp_path / "r.jsonl", [*rows, {"id": "not-a-problem", "response": "\\boxed{1}"}])
    responses = read_responses(path)
    message = _raises(EvaluationError, lambda: evaluate_responses(responses, ["toy"], **where))
    per, _ = evaluate_responses(responses, ["toy"], allow_unknown_ids=True, **where)  # the counted-warning way
    assert per["toy"]["problems"] == len(problems)
    return message.replace(str(path), "<file>")


def non_utf8_response_row(tiny_toy, tmp_path, capsys):
    _, problems = _toy_benchmark(tiny_toy)
    rows = [{"id": p["id"], "response": "\\boxed{1}"} for p in problems]
    path = _jsonl(tmp_path / "r.jsonl", [*rows, b'{"id": "x", "response": "\xff"}'])
    responses = read_responses(path)
    assert sum(map(len, responses.by_id.values())) == len(problems), "the readable rows are kept"
    ((line, reason),) = responses.rejected
    return f"line {line}: {reason}"


def malformed_benchmark_row(tiny_toy, tmp_path, capsys):
    path = _jsonl(tmp_path / "aime24.jsonl", [{"id": "1", "problem": "p"}])
    message = _raises(EvaluationError, lambda: evaluate_responses({}, ["aime24"], data_dir=tmp_path))
    return message.replace(str(path), "<file>")


CASES = {
    non_utf8_row: "(row): not valid UTF-8 (byte 0xe9 at column 28)",
    nan_answer: "answer: field 'answer' is nan, not a finite number",
    infinite_answer: "answer: field 'answer' is -inf, not a finite number",
    lone_surrogate_row: "problem: field 'problem' holds a lone surrogate ('\\ud800') at character 8: not text",
    ray_address_nobody_listens_on: "the Ray cluster at ray.address=127.0.0.1:1 cannot be reached (127.0.0.1:1: "
    "Connection refused); start it (`ray start --head`), correct ray.address, or unset it to run on a local Ray",
    not_json_row: "(row): not valid JSON (Expecting property name enclosed in double quotes at column 2)",
    not_an_object_row: "(row): a row must be an object, got list",
    missing_problem: "problem: missing field 'problem'",
    empty_answer: "answer: field 'answer' is empty",
    problem_of_wrong_type: "problem: field 'problem' has type list, expected a string",
    duplicate_id: "id: duplicate id 'a' (first at row 1)",
    duplicate_problem: "problem: duplicate problem (first at row 1)",
    prompt_over_budget: "problem: prompt has <the chat prompt's token count> tokens, over data.max_prompt_tokens=128",
    empty_input_file: "<file>: the file is empty (no rows to curate)",
    missing_input_file: "input not found: <tmp>/nope.jsonl (data.train_path)",
    limit_zero: "sent curate: error: argument --limit: must be at least 1, got 0",
    limit_negative: "sent curate: error: argument --limit: must be at least 1, got -5",
    limit_negative_in_the_library: "limit must be a positive number of rows, got -5",
    model_not_bootstrapped: "error: no model at <tmp>/data/models/toy: run `sent toy bootstrap --config "
    "configs/toy.yaml` first, or set model.path to a model directory (or a hub id with hub access)",
    duplicate_yaml_key: "<file>: duplicate key 'lr' at line 8 (first at line 7)",
    unknown_config_key: "error: invalid configuration in <file> with ['sampling.bogus=1']:\n"
    "  sampling.bogus: unknown key",
    unknown_response_ids: "<file>: 1 ids are in none of the benchmarks ['toy'] (first: 'not-a-problem'); "
    "pass --allow-unknown-ids to score the rest anyway",
    non_utf8_response_row: "line 201: not valid UTF-8 (byte 0xff at column 26)",
    credentials_in_a_config_value: "error: <file>: tracking.tracking_uri holds credentials in a URI. A run stores "
    "its config in run.json, MLflow and Prefect's database, so credentials go in the environment: "
    "MLFLOW_TRACKING_URI, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), "
    "and a storage service's own credential variables",
    yaml_alias_bomb: "error: override ray.runtime_env: more than 100,000 values once its YAML aliases are "
    "expanded; a config is far smaller (an alias bomb?)",
    device_this_machine_lacks: "model.device='cuda:99', but this machine has <n> CUDA device(s); use auto or cpu",
    model_with_an_empty_config: "<dir> does not load (OSError: It looks like the config file at "
    "'<dir>/config.json' is not a valid JSON file.)",
    curation_state_that_is_a_list: "<dir>/curation.json is not a curation's state (not a JSON object): the "
    "directory was damaged; choose another --out, or remove it to start again",
    manifest_that_is_a_list: "<dir>/manifest.json: a manifest is a JSON object, got list",
    manifest_without_files: "<dir>/manifest.json: 'files' must list each file's path, bytes and sha256",
    training_into_a_curation_directory: "<dir> is a curation directory, not a run directory; train into another --out",
    output_that_is_a_file: "<path> is a file, not a directory: choose another output directory",
    malformed_benchmark_row: "<file>:1: field 'answer' is missing, empty or not a string",
    unknown_loss: "error: invalid configuration in <file> with ['training.loss=bogus']:\n"
    "  training.loss: Value error, unknown loss 'bogus'; known: clip_cov, entropy_mask, kl_cov, ppo_clip, sent",
    betas_out_of_range: "error: invalid configuration in <file> with ['training.betas=[2,3]']:\n"
    "  training.betas: Value error, AdamW's betas must each be in [0, 1), got [2.0, 3.0]",
    k_of_zero: "error: invalid configuration in <file> with ['evaluation.k=[0]']:\n"
    "  evaluation: Value error, evaluation.k must be at least 1, got [0]",
    k_above_n: "error: invalid configuration in <file> with ['evaluation.k=[1,4,16]']:\n"
    "  evaluation: Value error, evaluation.k [16] above evaluation.n=8: pass@k needs k <= n samples; "
    "raise n or drop those k",
    template_without_problem: "error: invalid configuration in <file> with ['prompt.template=Solve it.']:\n"
    "  prompt.template: Value error, it has no {problem}",
    template_with_another_field: "error: invalid configuration in <file> with "
    "['prompt.template=Solve {problem} in {language}']:\n"
    "  prompt.template: Value error, unknown fields ['language'] (a literal brace is written {{ or }})",
    boolean_sample_count: "error: invalid configuration in <file> with ['sampling.n=true']:\n"
    "  sampling.n: Value error, expected int, got the boolean true",
    infinite_learning_rate: "error: invalid configuration in <file> with ['training.lr=.inf']:\n"
    "  training.lr: Input should be a finite number",
    nan_reward: "error: invalid configuration in <file> with ['training.correct_score=.nan']:\n"
    "  training.correct_score: Input should be a finite number",
    infinite_judge_timeout: "error: invalid configuration in <file> with ['semantic.judge_timeout_s=.inf']:\n"
    "  semantic.judge_timeout_s: Input should be a finite number",
    override_with_a_python_tag: "error: override 'seed=!!python/object/apply:os.system [echo hi]': the value is "
    "not valid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system')",
    override_cut_short: "error: override 'seed=[1,': the value is not valid YAML "
    "(expected the node content, but found '<stream end>')",
    override_with_an_undefined_alias: "error: override 'seed=*a': the value is not valid YAML "
    "(found undefined alias 'a')",
    override_with_a_reserved_character: "error: override 'seed=@x': the value is not valid YAML "
    "(found character '@' that cannot start any token)",
}


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__ for c in CASES])
def test_bad_input_gets_its_exact_message(case, tiny_toy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a case does lands in the checkout
    message = case(tiny_toy, tmp_path, capsys)
    assert message == CASES[case]


def test_the_table_covers_the_cases():
    assert len(CASES) >= 20
    assert all(re.search(r"\S", m) for m in CASES.values())


def test_curation_of_a_file_with_bad_bytes_keeps_every_row(tiny_toy, tmp_path):
    """The whole phase on a file with a non-UTF-8 line and NaN answers: rows in = accepted + rejected."""
    good = tiny_toy.rl_path.read_text().splitlines()[:30]
    lines = [*good[:10], b'{"id": "bad-bytes", "problem": "\xff\xfe", "answer": "1"}', *good[10:20]]
    lines += ['{"id": "nan", "problem": "Compute nothing.", "answer": NaN}', *good[20:]]
    path = _jsonl(tmp_path / "in.jsonl", lines)
    cfg = toy_config(tiny_toy, f"data.train_path={path}", "sampling.n=2", "data.max_rejected_fraction=0.1")
    result = curate(cfg, out=tmp_path / "run")
    counts = result.manifest["counts"]
    assert (counts["input_rows"], counts["accepted"], counts["rejected"]) == (32, 30, 2)
    rejected = pq.read_table(tmp_path / "run" / "rejected.parquet").to_pylist()
    assert [(r["row"], r["field"]) for r in rejected] == [(11, ""), (22, "answer")]
    assert rejected[0]["original"] == '{"id": "bad-bytes", "problem": "\\xff\\xfe", "answer": "1"}'


def test_an_empty_stage_is_reported_not_a_crash(tiny_toy, tmp_path, capsys):
    """N = 1: every problem has SE 0, so stage 2 gets nothing. The summary says so (it crashed on
    formatting a missing mean before), the manifest lists it, and a rerun reports the same."""
    argv = ["curate", "--config", TOY, f"model.path={tiny_toy.model_dir}", f"data.train_path={tiny_toy.rl_path}"]
    argv += ["sampling.n=1", "--limit", "12", "--out", str(tmp_path / "run"), *PINNED]
    for _ in range(2):  # written, then reused
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "stage 1: 12 problems, mean SE 0.000, stage 2: empty" in out
        assert "Pearson r(SE, 1 - pass rate) = n/a" in out
        assert "note: stage(s) 2 received no problems" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["curriculum"]["empty_stages"] == [2]


def test_second_curation_of_one_directory_is_refused_with_the_holders_pid(tiny_toy, tmp_path):
    from sent.locks import LockedError, exclusive

    cfg = toy_config(tiny_toy, "sampling.n=2")
    with exclusive(tmp_path / "run", "sent curate"):  # a first run, holding the directory
        message = _raises(LockedError, lambda: curate(cfg, out=tmp_path / "run", limit=4))
    assert f"PID {os.getpid()}" in message and "another sent curate" in message
    assert curate(cfg, out=tmp_path / "run", limit=4).manifest["counts"]["accepted"] == 4  # free again


def test_a_missing_model_leaves_no_run_directory(tiny_toy, tmp_path):
    from sent.models import ModelNotFoundError

    cfg = toy_config(tiny_toy, f"model.path={tmp_path}/data/models/toy")
    with pytest.raises(ModelNotFoundError):
        curate(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
