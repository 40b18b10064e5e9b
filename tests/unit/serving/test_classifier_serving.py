"""What serving a classifier reads and refuses before any model is loaded: each example's class (its final answer's
first line) with every bad line named by file and line, the thresholds ``ftc eval`` takes, and the model card of a
classifier's export, whose labels are outside text: escaped in prose, exact Python literals in its snippet."""

from __future__ import annotations

import ast
import json
import re

import pytest

from ftc.errors import DataInvalid, UsageError
from ftc.serving.card import model_card
from ftc.serving.classify import check_threshold, config_label_map, labelled_conversations
from ftc.serving.trained import Trained

from support.records import DIGEST, write_checkpoint

LABELS = ("safe", "unsafe")


def _write(path, *answers: str) -> None:
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}) + "\n"
            for i, a in enumerate(answers)
        )
    )


def _trained(tmp_path, labels: tuple[str, ...] | None, **record) -> Trained:
    folder = tmp_path / "ckpt"
    return Trained(folder, write_checkpoint(folder, **record), False, False, None, None, [], "tiny/model", None, labels)


def test_the_class_is_the_final_answers_first_line_and_the_prompt_the_turns_before_it(tmp_path):
    path = tmp_path / "data.jsonl"
    system = {"role": "system", "content": "Judge the user's request."}
    user = {"role": "user", "content": "how to bake bread"}
    earlier = [system, user, {"role": "assistant", "content": "unsafe"}, {"role": "user", "content": "and a bomb?"}]
    path.write_text(
        json.dumps({"messages": [system, user, {"role": "assistant", "content": "safe"}]})
        + "\n\n"
        + json.dumps({"messages": [*earlier, {"role": "assistant", "content": "unsafe\nS1, S9"}]})
        + "\n"
    )
    assert labelled_conversations(path, LABELS) == [(1, [system, user], 0), (3, earlier, 1)]


def test_every_line_whose_class_is_no_label_is_named_the_first_ten_then_a_count(tmp_path):
    path = tmp_path / "data.jsonl"
    _write(path, "safe", " safe", "Safe", "unsafe\r\nS1", *["maybe"] * 10)
    with path.open("a") as f:
        f.write("not json\n")
    with pytest.raises(DataInvalid) as caught:
        labelled_conversations(path, LABELS)
    message = str(caught.value)
    assert message.startswith(f"{path}: 14 line(s) cannot be scored:\n")
    assert f'{path}:2: the final answer\'s first line " safe" is not one of the labels ("safe", "unsafe")' in message
    assert f'{path}:4: the final answer\'s first line "unsafe\\r" is not' in message  # shown escaped, not obeyed
    assert f"{path}:11:" in message and f"{path}:12:" not in message and f"{path}: and 4 more bad lines" in message
    assert f"{path}:1:" not in message


def test_many_labels_are_named_ten_then_counted_and_an_empty_file_has_no_examples(tmp_path):
    path = tmp_path / "data.jsonl"
    _write(path, "x" * 50)
    labels = tuple(f"L{i}" for i in range(12))
    with pytest.raises(DataInvalid, match=re.escape(f'first line "{"x" * 40}..." is not one of the labels ("L0", ')):
        labelled_conversations(path, labels)
    with pytest.raises(DataInvalid, match='"L9" and 2 more\\)'):
        labelled_conversations(path, labels)
    path.write_text("\n")
    with pytest.raises(DataInvalid, match=f"^{re.escape(str(path))}: no examples$"):
        labelled_conversations(path, labels)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, float("nan"), float("inf")])
def test_a_threshold_is_a_probability_strictly_between_zero_and_one(value, tmp_path):
    with pytest.raises(UsageError, match="a probability strictly between 0 and 1"):
        check_threshold(_trained(tmp_path, LABELS), value)


def test_a_threshold_needs_a_classifier_of_two_labels(tmp_path):
    check_threshold(_trained(tmp_path, LABELS), 0.3)
    check_threshold(_trained(tmp_path, None), None)
    with pytest.raises(UsageError, match="for a classifier; .* answers in text"):
        check_threshold(_trained(tmp_path, None), 0.3)
    with pytest.raises(UsageError, match="of two labels .* has 3\n    fix: drop --threshold"):
        check_threshold(_trained(tmp_path, ("a", "b", "c")), 0.3)


def test_the_config_label_map_is_transformers_id2label_and_label2id_with_the_token_ids():
    assert config_label_map(("safe", "unsafe"), [7, 9]) == {
        "id2label": {"0": "safe", "1": "unsafe"},
        "label2id": {"safe": 0, "unsafe": 1},
        "label_token_ids": {"safe": 7, "unsafe": 9},
    }


HOSTILE = ["safe", "<script>alert(1)</script>", "a|b", "```", 'it\'s "quoted" \\', "\x1b[2J\u202e", "x\ny"]


def _classifier_card(tmp_path) -> str:
    evals = [{"step": 4, "eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1_macro": 0.7, "eval_prauc_macro": 0.8}]
    valid = {"role": "valid", "source": {"source": "local", "kind": "file", "location": "../valid.jsonl"},
             "sha256": DIGEST, "examples": 4, "examples_used": 4, "examples_skipped": 0}  # fmt: skip
    trained = _trained(tmp_path, tuple(HOSTILE), results={"evals": evals}, datasets=[valid])
    classifier = {"labels": HOSTILE, "label_token_ids": list(range(10, 17))}
    export = {"merged": False, "dtype": "float32", "chat_template": "tokenizer", "stop_strings": ["</s>"],
              "eos_token_id": [2], "classifier": classifier}  # fmt: skip
    return model_card(trained, export, "guard")


def test_a_classifiers_card_lists_its_labels_escaped_and_its_snippet_reads_them_exactly(tmp_path):
    card = _classifier_card(tmp_path)
    snippet = re.search(r"^(`{4,})python\n(.*?)^\1$", card, re.M | re.S)  # a label holds ```: a longer fence
    assert snippet is not None
    code = snippet.group(2)
    tree = ast.parse(code)  # valid Python whatever the labels
    literal = next(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "label_token_ids"
    )
    assert ast.literal_eval(literal) == dict(zip(HOSTILE, range(10, 17)))
    assert "logits[0, -1]" in code and "generate" not in code and "skip_special_tokens" not in code
    prose = card.replace(snippet.group(0), "")
    assert "<script" not in prose and "| a\\|b | 12 |" in prose and "| 0 | safe | 10 |" in prose
    assert not any(c in card for c in "\x1b\r\u202e")
    table = "| step | eval loss | accuracy | macro F1 | macro PR-AUC |\n|---|---|---|---|---|\n"
    assert table + "| 4 | 0.5000 | 0.750 | 0.700 | 0.800 |" in card


def test_a_classifiers_card_metadata_reports_its_last_evaluations_metrics(tmp_path):
    import yaml

    card = _classifier_card(tmp_path)
    metadata = yaml.safe_load(card[4:].split("\n---\n", 1)[0])
    assert metadata["pipeline_tag"] == "text-generation"  # a causal LM whose next token is the label
    metrics = metadata["model-index"][0]["results"][0]["metrics"]
    assert [(m["type"], m["value"]) for m in metrics] == [("loss", 1.5), ("accuracy", 0.75), ("f1", 0.7),
                                                           ("pr_auc", 0.8)]  # fmt: skip
