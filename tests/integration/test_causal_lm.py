"""task: causal_lm end to end on a tiny model: chat lines without answers and {"text": ...} lines compile, `ftc data
inspect` shows every token trained (100%), a run trains on every token, and a line of neither form is a data
problem naming file:line."""

from __future__ import annotations

import re

import pytest

from ftc.errors import ExitCode

from conftest import read_json
from support.models import PROMPT_FORMAT, write_jsonl

pytestmark = pytest.mark.slow

FORMAT = {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}


def _data(tmp_path):
    lines = []
    for a in range(12):
        lines.append({"text": f"{a} + {a} = {2 * a}. {a} + 1 = {a + 1}."})
        lines.append({"messages": [{"role": "user", "content": f"Tell me about {a}."}]})  # no assistant turn
    return write_jsonl(tmp_path / "causal.jsonl", lines)


def _trained_share(text: str) -> tuple[int, int]:
    found = re.search(r"tokens: ([\d,]+), trained ([\d,]+) \(100\.0%\)", text)
    assert found, text
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def test_causal_lm_trains_every_token_of_chat_and_text_lines(job, ftc, tmp_path):
    _data(tmp_path)
    spec = job(task="causal_lm", train_path="causal.jsonl", valid_path="causal.jsonl", generation_config=FORMAT)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "plan.json")
    assert plan["spec"]["task"] == "causal_lm" and plan["inputs"]["train"]["records"] == 24

    shown = ftc("data", "inspect", tmp_path / "plan.json", "-n", "2", "--no-color")
    assert shown.code == 0, shown.err
    assert "task causal_lm: every token of every example is trained" in shown.out
    tokens, trained = _trained_share(shown.out)
    assert tokens == trained > 0
    assert "⟦0 + 0 = 0. 0 + 1 = 1." in shown.out  # a text line, marked trained from its first character

    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 0, r.err
    said = re.search(r"train: 24 examples, ([\d,]+) tokens, ([\d,]+) of them trained \(100\.0%, every token\)", r.err)
    assert said and said[1] == said[2] == f"{tokens:,}", r.err


def test_a_text_file_compiles_only_as_causal_lm_and_a_line_of_neither_form_is_named(job, ftc, tmp_path):
    write_jsonl(tmp_path / "text.jsonl", [{"text": "1 + 1 = 2."}, {"prompt": "2 + 2"}, {"text": "3 + 3 = 6."}])
    r = ftc("compile", job(task="causal_lm", train_path="text.jsonl", valid_path=None), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.SPEC_INVALID
    assert 'text.jsonl:2: $.train_path (spec line 3): neither "messages" (a chat example) nor "text"' in r.err
    assert 'or a text example, like {"text":' in r.err
    r = ftc("compile", job(train_path="text.jsonl", valid_path=None), "-o", tmp_path / "p.json")
    assert (
        r.code == ExitCode.SPEC_INVALID
        and 'text.jsonl:1: $.train_path (spec line 3): no "messages" list ({"text": ...} lines are task causal_lm\'s)'
        in r.err
    )

    write_jsonl(tmp_path / "text.jsonl", [{"text": "1 + 1 = 2."}, {"text": "3 + 3 = 6."}])
    spec = job(task="causal_lm", train_path="text.jsonl", valid_path=None, output_dir="text-out")
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert "train: 2 examples" in r.err and "(100.0%, every token)" in r.err


def test_causal_lm_refuses_generated_answers_as_its_evaluation(job, ftc, tmp_path):
    _data(tmp_path)
    spec = job(task="causal_lm", train_path="causal.jsonl", valid_path="causal.jsonl", evaluation={"generate": True})
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.evaluation.generate: task causal_lm trains every token" in r.err
