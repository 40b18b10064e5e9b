"""Preference pairs end to end before training: compile counts the pairs of a {"chosen": [...], "rejected": [...]}
file and names every bad line at its line (the first ten, then how many more), a pair file and a chat file given to
the other's task say so, and ``ftc data inspect`` shows each pair's prompt once and both answers with their trained
tokens marked. llmforge's DPO config, on a tiny Mistral, compiles and inspects."""

from __future__ import annotations

import json

import pytest

from ftc.errors import ExitCode
from ftc.spec.chat_data import EXAMPLE_PAIR, read_chat_jsonl, read_preference_pairs

from support.models import arithmetic_examples, write_jsonl
from support.preference import llmforge_dpo_job, preference_pairs

USER = {"role": "user", "content": "What is 2 + 2?"}


def _answer(text):
    return {"role": "assistant", "content": text}


@pytest.fixture
def pairs(tmp_path):
    """16 training pairs and 4 validation pairs, as spec keys of a preference_tuning job."""
    write_jsonl(tmp_path / "pairs-train.jsonl", preference_pairs(16, seed=1))
    write_jsonl(tmp_path / "pairs-valid.jsonl", preference_pairs(4, seed=2))
    return {"train_path": "pairs-train.jsonl", "valid_path": "pairs-valid.jsonl", "task": "preference_tuning"}


def _line(value) -> str:
    """A data line: a JSON value written, or text as it is."""
    return value if isinstance(value, str) else json.dumps(value)


def test_pairs_are_counted_with_their_system_message_and_llmforges_extra_keys(job, ftc, tmp_path):
    lines = preference_pairs(6, seed=3, system="You add numbers.")
    lines[0] |= {"num_words_chosen": 1, "num_words_rejected": 1, "accuracy_chosen": 5, "accuracy_rejected": 2}
    write_jsonl(tmp_path / "train.jsonl", lines)
    r = ftc("compile", job(task="preference_tuning", train_path="train.jsonl", valid_path=None), "-o",
            tmp_path / "plan.json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "plan.json").read_text())["inputs"]["train"]["records"] == 6


BAD = [
    ("[1, 2]", "expected a JSON object, got list"),
    ({"chosen": [USER, _answer("4")]}, 'no "rejected" conversation'),
    ({"messages": [USER, _answer("4")]},
     'no "chosen" and no "rejected" conversations (a {"messages": ...} line is one conversation; a pair holds two)'),
    ({"chosen": "4", "rejected": [USER, _answer("5")]}, '"chosen" is not a list'),
    ({"chosen": [USER, _answer("4")], "rejected": []}, '"rejected" is empty'),
    ({"chosen": [USER, {"role": "bot", "content": "4"}], "rejected": [USER, _answer("5")]},
     'chosen[1] has unknown role "bot"'),
    ({"chosen": [USER, _answer("4")], "rejected": [USER, {"role": "assistant", "content": 5}]},
     "rejected[1] (assistant) has no string content"),
    ({"chosen": [USER], "rejected": [USER, _answer("5")]},
     '"chosen" ends with a user message, not the assistant\'s final answer'),
    ({"chosen": [USER, _answer("4")], "rejected": [USER, _answer("  ")]},
     "rejected[1] is an empty assistant turn (nothing to learn from)"),
    ({"chosen": [USER, _answer("4")], "rejected": [{**USER, "content": "What is 2 + 3?"}, _answer("5")]},
     '"chosen" and "rejected" differ at message [0]; a pair differs only in its final answer'),
    ({"chosen": [USER, _answer("4"), USER, _answer("4")], "rejected": [USER, _answer("5")]},
     '"chosen" and "rejected" differ at message [1]; a pair differs only in its final answer'),
    ({"chosen": [USER, _answer("4")], "rejected": [USER, _answer(" 4\n")]},
     "the chosen and the rejected final answers are the same text (nothing to prefer)"),
    ('{"chosen": [}', "not valid JSON"),
]  # fmt: skip


def test_every_bad_pair_is_named_at_its_line_with_what_a_pair_looks_like(job, ftc, tmp_path, pairs):
    """Each kind of bad line, one after each good one: all named at once (ten, then how many more), exit 3."""
    lines = []
    for good, (bad, _) in zip(preference_pairs(len(BAD), seed=4), BAD):
        lines += [_line(good), _line(bad)]
    (tmp_path / "pairs-train.jsonl").write_text("\n".join(lines) + "\n")
    r = ftc("compile", job(**pairs))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    at = "pairs-train.jsonl:{}: $.train_path (spec line 3): "
    for i, (_, reason) in enumerate(BAD[:10]):  # each bad line is the (2i + 2)th
        assert at.format(2 * i + 2) + reason in r.err, (reason, r.err)
    assert at.format(20) + f"and {len(BAD) - 10} more bad lines after" in r.err
    assert "fix: each line must be a preference pair: the same conversation twice, ending with the preferred " in r.err
    assert EXAMPLE_PAIR in r.err


def test_every_bad_pair_reason_is_what_the_reader_gives(tmp_path):
    """Every kind, those past compile's first ten too, as the reader names it."""
    (tmp_path / "bad.jsonl").write_text("".join(_line(bad) + "\n" for bad, _ in BAD))
    found = list(read_preference_pairs(tmp_path / "bad.jsonl"))
    assert [item.line for item in found] == list(range(1, len(BAD) + 1))
    for item, (_, reason) in zip(found, BAD):
        assert item.chosen is None and item.rejected is None and item.problem.startswith(reason), (item, reason)


@pytest.mark.parametrize(
    "line",
    [
        b'{"chosen": [}\n',
        b'{"chosen": "\xff"}\n',
        b'{"chosen": NaN}\n',
        b'{"chosen": 1, "chosen": 2}\n',
        b"[" * 100_000 + b"\n",
        b'{"chosen": "' + b"x" * (17 << 20) + b'"}\n',
    ],
    ids=["json", "utf-8", "nan", "duplicate-key", "too-deep", "too-long"],
)
def test_a_pair_line_that_is_not_json_gets_the_chat_readers_reason(tmp_path, line):
    path = tmp_path / "data.jsonl"
    path.write_bytes(line)
    (pair,) = read_preference_pairs(path)
    (chat,) = read_chat_jsonl(path)
    assert pair.problem is not None and pair.problem == chat.problem
    assert pair.chosen is None and pair.rejected is None


def test_chat_lines_given_to_preference_tuning_and_pairs_given_to_instruction_tuning_say_so(job, ftc, tmp_path, pairs):
    write_jsonl(tmp_path / "chat.jsonl", arithmetic_examples(2, seed=1))
    r = ftc("compile", job(**{**pairs, "train_path": "chat.jsonl"}))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert (
        'chat.jsonl:1: $.train_path (spec line 3): no "chosen" and no "rejected" conversations (a {"messages": '
        in r.err
    )
    r = ftc("compile", job(train_path="pairs-train.jsonl", valid_path=None))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert (
        'pairs-train.jsonl:1: $.train_path (spec line 3): no "messages" list ({"chosen": ..., "rejected": ...} '
        "lines are task preference_tuning's)" in r.err
    )


def test_skip_bad_examples_compiles_with_the_good_pairs_counted(job, ftc, tmp_path, pairs):
    lines = (tmp_path / "pairs-train.jsonl").read_text().splitlines()
    lines[4] = json.dumps({"chosen": [USER, _answer("4")], "rejected": [USER, _answer("4")]})
    (tmp_path / "pairs-train.jsonl").write_text("\n".join(lines) + "\n")
    r = ftc("compile", job(skip_bad_examples=True, **pairs), "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    assert "1 bad line(s)" in r.err
    assert json.loads((tmp_path / "plan.json").read_text())["inputs"]["train"]["records"] == 15


def test_data_inspect_shows_each_pairs_prompt_once_and_both_answers_marked(job, ftc, tmp_path, pairs):
    lines = (tmp_path / "pairs-train.jsonl").read_text().splitlines()
    lines[5] = json.dumps({"chosen": [USER, _answer("4")], "rejected": [USER, _answer("4")]})
    (tmp_path / "pairs-train.jsonl").write_text("\n".join(lines) + "\n")
    assert ftc("compile", job(skip_bad_examples=True, **pairs), "-o", tmp_path / "plan.json").code == 0
    r = ftc("data", "inspect", tmp_path / "plan.json", "-n", "2", "--no-color")
    assert r.code == 0, r.err
    first = preference_pairs(1, seed=1)[0]
    question, chosen, rejected = (first[k][i]["content"] for k, i in (("chosen", 0), ("chosen", 1), ("rejected", 1)))
    assert "task preference_tuning: each pair shares its prompt; its two final answers (chosen and rejected)" in r.out
    block = r.out.split("--- pairs-train.jsonl:1 ")[1].split("--- pairs-train.jsonl:2 ")[0]
    assert block.count(question) == 1  # the prompt once
    assert f"chosen:   ⟦{chosen}</s>\n⟧" in block and f"rejected: ⟦{rejected}</s>\n⟧" in block  # the answers, marked
    assert "⟦" not in block.split("chosen:")[0]  # the prompt is context
    assert "--- pairs-train.jsonl:3 " not in r.out  # -n 2
    # the tiny tokenizer: "<s><|user|>\nWhat is 8 + 36?</s>\n<|assistant|>\n" then "44</s>\n" (3 tokens trained)
    assert "--- pairs-train.jsonl:1 (chosen 16 tokens, 3 trained; rejected 16 tokens, 3 trained)" in r.out
    assert "pairs: 15 (1 bad)" in r.out
    assert "tokens: chosen " in r.out and "; rejected " in r.out
    assert (
        "warning: 1 bad pair(s)" in r.out and "pairs-train.jsonl:6: the chosen and the rejected final answers" in r.out
    )
    valid = ftc("data", "inspect", tmp_path / "plan.json", "--split", "valid", "-n", "0", "--no-color")
    assert valid.code == 0 and "pairs: 4 (0 bad)" in valid.out and "no warnings" in valid.out


def test_llmforges_dpo_config_on_a_tiny_mistral_compiles_and_inspects(ftc, tmp_path):
    spec = llmforge_dpo_job(tmp_path / "job", pairs=8)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["spec"]["task"] == "preference_tuning" and plan["architecture"]["config"]["model_type"] == "mistral"
    assert plan["spec"]["preference_tuning_config"]["beta"] == 0.01
    r = ftc("data", "inspect", tmp_path / "plan.json", "-n", "1", "--no-color")
    assert r.code == 0, r.err
    assert "pairs: 8 (0 bad)" in r.out and "chosen:   ⟦" in r.out and "rejected: ⟦" in r.out
