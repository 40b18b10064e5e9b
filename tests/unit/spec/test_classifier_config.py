"""task: classification with llmforge's classifier_config: the labels and metrics in the typed spec and the plan,
the task inferred from the config, and every problem with them named at its place."""

from __future__ import annotations

import json

import pytest

from ftc.errors import ExitCode

from support.guard import guard_examples
from support.models import write_jsonl

GUARD = {"classifier_config": {"label_tokens": ["safe", "unsafe"]}}


@pytest.fixture
def guard(tmp_path):
    """The guard set's train and valid files, as spec keys."""
    write_jsonl(tmp_path / "guard-train.jsonl", guard_examples(16, seed=1))
    write_jsonl(tmp_path / "guard-valid.jsonl", guard_examples(4, seed=2))
    return {"train_path": "guard-train.jsonl", "valid_path": "guard-valid.jsonl"}


def _compiled(ftc, path, out):
    r = ftc("compile", path, "-o", out)
    assert r.code == 0, r.err
    return json.loads(out.read_text())


def test_classifier_config_alone_makes_a_classifier_with_llmforges_default_metrics(job, ftc, guard, tmp_path):
    plan = _compiled(ftc, job(**GUARD, **guard), tmp_path / "plan.json")
    assert plan["spec"]["task"] == "classification"
    assert plan["spec"]["classifier_config"] == {
        "label_tokens": ["safe", "unsafe"],
        "eval_metrics": ["prauc", "accuracy", "f1"],
    }
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "task      classification: the loss on the final answer's label token only" in shown
    assert "labels    2: 'safe', 'unsafe'; metrics prauc, accuracy, f1" in shown


def test_a_spec_without_classifier_config_keeps_its_plan_without_the_key(job, ftc, tmp_path):
    plan = _compiled(ftc, job(), tmp_path / "plan.json")
    assert "classifier_config" not in plan["spec"]


@pytest.mark.parametrize(
    "keys, where, message",
    [
        ({"task": "classification"}, "$.task", "task classification needs its labels, and there is no "
         "classifier_config"),
        ({"classifier_config": {"label_tokens": []}}, "$.classifier_config", "label_tokens"),
        ({"classifier_config": {"label_tokens": ["a", "a"]}}, "$.classifier_config.label_tokens", "duplicate"),
        ({"classifier_config": {"label_tokens": ["a", ""]}}, "$.classifier_config.label_tokens[1]", "not be empty"),
        ({"classifier_config": {"label_tokens": ["a", " b"]}}, "$.classifier_config.label_tokens[1]",
         "the label ' b' begins or ends with white space"),
        ({"classifier_config": {"label_tokens": ["a"], "eval_metrics": ["auc"]}},
         "$.classifier_config.eval_metrics[0]", "auc"),
        ({"classifier_config": {"label_tokens": ["x" * 65]}}, "$.classifier_config.label_tokens[0]", "too long"),
    ],
)  # fmt: skip
def test_a_classifier_config_ftc_cannot_train_is_a_spec_problem_at_its_place(job, ftc, keys, where, message):
    r = ftc("compile", job(**keys))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert where in r.err and message in r.err, r.err


def test_more_than_a_thousand_labels_are_refused(job, ftc):
    r = ftc("compile", job(classifier_config={"label_tokens": [f"l{i}" for i in range(1001)]}))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.classifier_config.label_tokens" in r.err and "too long" in r.err, r.err


def test_every_line_whose_final_answer_is_not_a_label_is_a_data_problem_at_its_line(job, ftc, guard, tmp_path):
    lines = (tmp_path / "guard-train.jsonl").read_text().splitlines()
    wrong = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Safe"}]})
    user_last = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    lines[2], lines[5], lines[9] = wrong, wrong.replace("Safe", "safe "), user_last
    (tmp_path / "guard-train.jsonl").write_text("\n".join(lines) + "\n")
    r = ftc("compile", job(**GUARD, **guard))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "3 problems" in r.err
    at = "guard-train.jsonl:{}: $.train_path (spec line 3): "
    assert at.format(3) + 'the final answer "Safe" is not exactly one of the labels ("safe", "unsafe")' in r.err
    assert at.format(6) + 'the final answer "safe " is not exactly one of the labels' in r.err
    assert at.format(10) + "no assistant message" in r.err
    assert "fix: each line must be a chat example whose last message is the assistant's answer: one of" in r.err


def test_a_line_of_categories_after_the_label_is_taken_and_a_bad_one_is_a_data_problem(job, ftc, guard, tmp_path):
    def line(answer):
        return json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}]})

    lines = (tmp_path / "guard-train.jsonl").read_text().splitlines()
    lines[0], lines[1] = line("unsafe\nS1,S3"), line("safe\nnone")  # Llama Guard's answer: the class, then a line
    (tmp_path / "guard-train.jsonl").write_text("\n".join(lines) + "\n")
    assert ftc("compile", job(**GUARD, **guard)).code == 0
    lines[2], lines[3], lines[4] = line("unsafe\n"), line("unsafe\nS1\nS2"), line("Unsafe\nS1")
    (tmp_path / "guard-train.jsonl").write_text("\n".join(lines) + "\n")
    r = ftc("compile", job(**GUARD, **guard))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "3 problems" in r.err
    at = "guard-train.jsonl:{}: $.train_path (spec line 3): "
    assert at.format(3) + 'the answer\'s line after its label "unsafe" is ""; it may hold one non-blank line' in r.err
    assert at.format(4) + 'the answer\'s line after its label "unsafe" is "S1\\nS2"' in r.err
    assert at.format(5) + 'the final answer\'s first line "Unsafe" is not exactly one of the labels' in r.err


def test_a_conversation_that_goes_on_after_the_label_is_a_data_problem(job, ftc, guard, tmp_path):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "safe"},
        {"role": "user", "content": "sure?"},
    ]
    write_jsonl(tmp_path / "guard-valid.jsonl", [{"messages": messages}])
    r = ftc("compile", job(**GUARD, **guard))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert (
        "guard-valid.jsonl:1: $.valid_path (spec line 4): the last message is the user's; a classifier's example "
        "ends with the assistant's label" in r.err
    )
