"""The toy world: deterministic problems, disjoint splits, correct worked solutions, tokenizer."""

from __future__ import annotations

from collections import Counter

from sent.rewards import extract_answer, grade
from sent.toy.tokenizer import train_tokenizer
from sent.toy.world import DEFAULT_LEVELS, Level, generate_world, level_space, make_problem


def test_world_is_deterministic_and_splits_never_overlap():
    train1, test1 = generate_world(3, 400, 60)
    train2, test2 = generate_world(3, 400, 60)
    assert [p.row() for p in train1] == [p.row() for p in train2]
    assert [p.row() for p in test1] == [p.row() for p in test2]
    assert not {p.problem for p in train1} & {p.problem for p in test1}
    assert len({p.problem for p in train1}) == len(train1)
    assert len({p.id for p in train1 + test1}) == len(train1) + len(test1)  # ids name their split
    other, _ = generate_world(4, 400, 60)
    assert [p.problem for p in other] != [p.problem for p in train1]


def test_small_levels_are_not_swallowed_by_the_test_split():
    # L1 has 10 * 10 * 2 = 200 problems: the test split takes at most a quarter of them
    assert level_space(DEFAULT_LEVELS[0]) == 200
    train, test = generate_world(0, 3000, 200)
    counts_train, counts_test = Counter(p.level for p in train), Counter(p.level for p in test)
    assert counts_test[1] == 50 and counts_train[1] == 150
    assert counts_test[3] == 200 and counts_train[3] == 3000


def test_worked_solutions_are_right_and_graded_right():
    import random

    rng = random.Random(0)
    levels = [*DEFAULT_LEVELS, Level(3, 1, paren_prob=1.0), Level(4, 2, operators="+-", paren_prob=0.5)]
    for level_no, level in enumerate(levels, start=1):
        for i in range(50):
            p = make_problem(rng, level, level_no, i)
            expr = p.problem.removeprefix("Compute ").removesuffix(".")
            assert int(p.answer) == eval(expr)
            assert extract_answer(p.solution) == p.answer
            assert grade(p.solution, p.answer)
            # every step is right: "a+b=c"
            for step in p.solution.split(". ")[0].split(", "):
                lhs, rhs = step.split("=")
                assert eval(lhs) == int(rhs)


def test_tokenizer_round_trip_chat_template_and_reload(tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    train, _ = generate_world(0, 100, 10)
    corpus = [
        f"{p.problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}. {p.solution}"
        for p in train
    ]
    tok = train_tokenizer(corpus, vocab_size=320)
    text = "Compute 37+62-45.\nPlease reason step by step, and put your final answer within \\boxed{}."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < 40  # the instruction's words merged
    digits = tok("0123456789", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in digits] == list("0123456789")  # digit by digit
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # saved beside a qwen2 config and loaded as verl and vLLM load it: the same tokenizer
    tok.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tok)).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    full = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    assert loaded(full, add_special_tokens=False)["input_ids"] == tok(full, add_special_tokens=False)["input_ids"]
    assert loaded.eos_token_id == tok.eos_token_id
