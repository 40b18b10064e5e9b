"""What `ftc generate` and `ftc eval` refuse before generating anything: sampling settings that are no numbers,
conversations without a user turn to answer, and prompts that leave the model no room for an answer."""

from __future__ import annotations

import time

import pytest

from ftc.errors import ExitCode

from support.models import PROMPT_FORMAT, write_jsonl

FORMAT = {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}


@pytest.mark.parametrize("verb", [["generate", "CKPT", "--prompt", "hi"], ["eval", "CKPT", "--data", "d.jsonl"]])
@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--temperature", "nan", "'nan' is not a finite number"),
        ("--temperature", "inf", "'inf' is not a finite number"),
        ("--temperature", "-1", "-1.0 is not in the range x>=0"),
        ("--top-p", "nan", "'nan' is not a finite number"),
        ("--top-p", "-inf", "-inf is not in the range 0<x<=1"),
        ("--top-p", "0", "0.0 is not in the range 0<x<=1"),
    ],
)
def test_sampling_settings_that_are_no_numbers_are_refused_by_the_option_parser(ftc, verb, option, value, says):
    r = ftc(*verb, option, value)
    assert r.code == ExitCode.USAGE
    assert f"Invalid value for '{option}': {says}" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_prompts_that_cannot_be_answered_are_refused_before_any_answer(trained, ftc, tmp_path):
    checkpoint = trained(generation_config=FORMAT)
    user = {"role": "user", "content": "What is 1 + 1?"}
    only_answer = {"messages": [{"role": "assistant", "content": "2"}]}

    # a conversation with only an assistant turn: nothing to answer (a reshape traceback before)
    write_jsonl(tmp_path / "q.jsonl", [{"messages": [user]}, only_answer])
    r = ftc("generate", checkpoint, "--messages", tmp_path / "q.jsonl")
    assert r.code == ExitCode.DATA_INVALID and "Traceback" not in r.err
    assert f"{tmp_path / 'q.jsonl'}:2: no user turn to answer (the turns before the answer: none)" in r.err
    assert "fix: give each conversation a user turn" in r.err
    assert r.out == ""  # the first conversation was not answered either: every prompt is checked first
    write_jsonl(tmp_path / "qa.jsonl", [{"messages": [user, {"role": "assistant", "content": "2"}]}, only_answer])
    r = ftc("eval", checkpoint, "--data", tmp_path / "qa.jsonl", "-o", tmp_path / "answers.jsonl")
    assert r.code == ExitCode.DATA_INVALID and "Traceback" not in r.err
    assert f"{tmp_path / 'qa.jsonl'}:2: no user turn to answer" in r.err
    assert not (tmp_path / "answers.jsonl").exists()

    # a prompt longer than the model's context (the tiny model's: 512 tokens) ends at once
    r = ftc("generate", checkpoint, "--prompt", "1 + 1 = 2. " * 400)
    assert r.code == ExitCode.DATA_INVALID
    assert "--prompt: the prompt is " in r.err and "tokens, and the model takes at most 512" in r.err
    huge = {"messages": [{"role": "user", "content": "1 + 1 = 2. " * 40_000}]}  # about 200k tokens
    write_jsonl(tmp_path / "long.jsonl", [{"messages": [user]}, huge])
    started = time.monotonic()
    r = ftc("generate", checkpoint, "--messages", tmp_path / "long.jsonl", "--max-new-tokens", "100000")
    assert time.monotonic() - started < 120  # it was still generating at 180 s
    assert r.code == ExitCode.DATA_INVALID and r.out == ""
    assert f"{tmp_path / 'long.jsonl'}:2: the prompt is " in r.err and "shorten the conversation" in r.err
    write_jsonl(
        tmp_path / "long-qa.jsonl", [{"messages": [huge["messages"][0], {"role": "assistant", "content": "x"}]}]
    )
    r = ftc("eval", checkpoint, "--data", tmp_path / "long-qa.jsonl", "-o", tmp_path / "answers.jsonl")
    assert r.code == ExitCode.DATA_INVALID and "long-qa.jsonl:1: the prompt is " in r.err

    # what can be answered still is
    r = ftc("generate", checkpoint, "--prompt", "What is 1 + 1?", "--max-new-tokens", "3")
    assert r.code == 0, r.err
