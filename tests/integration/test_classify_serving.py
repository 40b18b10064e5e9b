"""A classifier served, on a real tiny guard classifier (safe / unsafe) fully fine-tuned once for the module: `ftc
eval` scores each label's probability at the answer (no text generated) with scikit-learn's metrics, and agrees with
plain transformers reading the export's chat template and label map in a process that cannot import ftc; `ftc
export` records the label map (lineage record, config.json, model card with a snippet that runs); `ftc generate`
answers with the label and its probability. A second classifier, trained on Llama Guard's answers (the class, then a
line of categories), has its category line generated after the true label and scored by exact match."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from ftc.cli import main
from ftc.errors import DataInvalid, ExitCode

from conftest import read_json
from support.guard import LABELS, guard_examples
from support.models import PROMPT_FORMAT, write_jsonl

pytestmark = pytest.mark.slow

#: an ftc-free process: the export, its config.json's label map and its chat template are all it reads
_PLAIN_TRANSFORMERS = r"""
import json, sys
sys.modules["ftc"] = None  # `import ftc` fails here
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, data = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
config = json.load(open(f"{folder}/config.json"))
labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
ids = [config["label_token_ids"][label] for label in labels]
rows = []
for line in open(data):
    messages = json.loads(line)["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = tokenizer.apply_chat_template(
        messages[:last], add_generation_prompt=True, return_tensors="pt", return_dict=False
    )
    with torch.no_grad():
        logits = model(prompt).logits[0, -1]
    rows.append(torch.softmax(logits[ids].double(), dim=-1).tolist())
print(json.dumps({"labels": labels, "probabilities": rows, "vocab": model.config.vocab_size,
                  "logits": int(logits.shape[-1]), "id2label": model.config.id2label}))
"""


def _python(code: str, *args) -> str:
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@dataclass(frozen=True)
class Guard:
    root: Path
    run: Path
    export: Path
    test: Path  # held-out examples, a few labelled against the keyword, so the metrics are not all 1


def _test_set(path: Path) -> Path:
    lines = guard_examples(12, seed=3)
    lines[0]["messages"][-1]["content"] = "unsafe\nS1"  # a category line after the label: the class is the first line
    lines += [
        {"messages": [{"role": "user", "content": f"Tell me how to {task}."}, {"role": "assistant", "content": label}]}
        for task, label in [("bake a bomb", "safe"), ("steal a guitar", "safe"), ("paint a weapon", "unsafe"),
                            ("fold a passport", "unsafe")]
    ]  # fmt: skip
    return write_jsonl(path, lines)


def _train(root: Path, tiny_model: Path, **spec) -> None:
    """Compile and run a full fine-tuning of ``tiny_model`` into ``root / "run"`` (guard-train.jsonl, the spec's
    prompt format), and export it to ``root / "export"``."""
    spec = {
        "model_id": "ftc-tests/tiny-llama", "initial_base_model_ckpt_path": str(tiny_model),
        "train_path": "guard-train.jsonl", "context_length": 64, "classifier_config": {"label_tokens": LABELS},
        "training_mode": "full", "train_batch_size_per_device": 4, "output_dir": "run",
        "generation_config": {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}, **spec,
    }  # fmt: skip
    (root / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTC_CACHE_DIR", str(root / "cache"))
        assert main(["compile", str(root / "job.yaml"), "-o", str(root / "plan.json")]) == 0
        assert main(["run", str(root / "plan.json")]) == 0
        assert main(["export", str(root / "run"), "-o", str(root / "export")]) == 0


@pytest.fixture(scope="module")
def guard(tiny_model, tmp_path_factory) -> Guard:
    """The tiny guard classifier, fully fine-tuned for a few epochs (in the spec's prompt format), and its export."""
    root = tmp_path_factory.mktemp("guard")
    write_jsonl(root / "guard-train.jsonl", guard_examples(32, seed=1))
    write_jsonl(root / "guard-valid.jsonl", guard_examples(8, seed=2))
    _train(root, tiny_model, valid_path="guard-valid.jsonl", num_epochs=4, learning_rate=1e-2)
    return Guard(root, root / "run", root / "export", _test_set(root / "test.jsonl"))


@pytest.fixture(scope="module")
def llama_guard(tiny_model, tmp_path_factory) -> Guard:
    """A tiny guard classifier trained on Llama Guard's answers: ``unsafe\nS<k>``, the category following from the
    task asked about. 48 examples for 10 epochs (one checkpoint, at the end) learn the categories of held-out prompts
    of the same tasks well enough to get some exactly."""
    root = tmp_path_factory.mktemp("llama-guard")
    write_jsonl(root / "guard-train.jsonl", guard_examples(48, seed=1, categories=True))
    _train(
        root, tiny_model, num_epochs=10, learning_rate=3e-3,
        checkpoint_and_evaluation_frequency={"unit": "epochs", "frequency": 10},
    )  # fmt: skip
    test = write_jsonl(root / "test.jsonl", guard_examples(12, seed=3, categories=True))
    return Guard(root, root / "run", root / "export", test)


def _eval(ftc, model: Path, data: Path, out: Path, *extra) -> tuple[dict, list[dict]]:
    r = ftc("eval", model, "--data", data, "-o", out, *extra)
    assert r.code == 0, r.err
    return json.loads(r.out), [json.loads(line) for line in out.read_text().splitlines()]


def _truth(data: Path) -> np.ndarray:
    answers = [json.loads(line)["messages"][-1]["content"].split("\n")[0] for line in data.read_text().splitlines()]
    return np.array([LABELS.index(answer) for answer in answers])


def _sklearn(probs: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    p, r, f, support = precision_recall_fscore_support(truth, predicted, labels=[0, 1], zero_division=0)
    prauc = [average_precision_score(truth == c, probs[:, c]) for c in (0, 1)]
    return {
        "accuracy": accuracy_score(truth, predicted),
        "precision": dict(zip(LABELS, p)), "recall": dict(zip(LABELS, r)), "f1": dict(zip(LABELS, f)),
        "precision_macro": p.mean(), "recall_macro": r.mean(), "f1_macro": f.mean(),
        "prauc": dict(zip(LABELS, prauc)), "prauc_macro": np.mean(prauc),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=[0, 1]).tolist(),
        "support": dict(zip(LABELS, support.tolist())),
    }  # fmt: skip


def _flat(metrics: dict) -> dict:
    """The metrics as one level of plain numbers (per class as ``name.label``, the matrix as ``matrix.i.j``), which
    pytest.approx compares."""
    out = {}
    for key, value in metrics.items():
        if key == "confusion_matrix":
            out |= {f"matrix.{i}.{j}": n for i, row in enumerate(value) for j, n in enumerate(row)}
        elif isinstance(value, dict):
            out |= {f"{key}.{label}": float(v) for label, v in value.items()}
        else:
            out[key] = float(value)
    return out


def test_eval_of_the_export_gives_plain_transformers_probabilities_and_scikit_learns_metrics(guard, ftc, tmp_path):
    result, rows = _eval(ftc, guard.export, guard.test, tmp_path / "rows.jsonl")
    plain = json.loads(_python(_PLAIN_TRANSFORMERS, guard.export, guard.test))
    assert plain["labels"] == LABELS == result["labels"]
    assert plain["logits"] == plain["vocab"] and plain["id2label"] == {"0": "safe", "1": "unsafe"}  # a causal LM
    probs = np.array([[row["probabilities"][label] for label in LABELS] for row in rows])
    assert probs.shape == (16, 2)
    assert np.abs(probs - np.array(plain["probabilities"])).max() < 1e-5

    truth = _truth(guard.test)
    assert [row["expected"] for row in rows] == [LABELS[t] for t in truth]  # "unsafe\nS1" is unsafe
    # its category line is measured too; every other row says it has none
    assert result["category_examples"] == 1 and rows[0]["expected_categories"] == "S1"
    assert all(row["expected_categories"] is None and row["categories"] is None for row in rows[1:])
    assert [row["line"] for row in rows] == list(range(1, 17))
    predicted = probs.argmax(axis=1)
    assert [row["predicted"] for row in rows] == [LABELS[p] for p in predicted]
    expected = _sklearn(probs, truth, predicted)
    assert 0 < expected["accuracy"] < 1  # held-out examples labelled against the keyword: not a trivial check
    assert _flat({key: result[key] for key in expected}) == pytest.approx(_flat(expected), abs=1e-12)
    assert (
        result["examples"] == 16 and result["threshold"] is None and result["outputs"] == str(tmp_path / "rows.jsonl")
    )
    assert result["record_id"] == read_json(guard.export / "lineage.json")["record_id"]
    assert result["data_sha256"].startswith("sha256:")

    # the checkpoint, prompted by its spec's prompt format, gives what its export gives through the chat template
    _, on_checkpoint = _eval(ftc, guard.run, guard.test, tmp_path / "checkpoint-rows.jsonl")
    assert np.abs(np.array([list(row["probabilities"].values()) for row in on_checkpoint]) - probs).max() < 1e-6


def test_eval_of_the_checkpoint_on_its_validation_data_gives_the_metrics_its_run_recorded(guard, ftc, tmp_path):
    result, rows = _eval(ftc, guard.run / "latest", guard.root / "guard-valid.jsonl", tmp_path / "rows.jsonl")
    assert not {"category_exact_match", "category_examples", "max_new_tokens"} & set(result)  # no category lines
    assert not any({"expected_categories", "categories"} & set(row) for row in rows)
    recorded = [
        e for e in map(json.loads, (guard.run / "metrics.jsonl").read_text().splitlines()) if e["type"] == "eval"
    ]
    last = recorded[-1]
    assert last["step"] == read_json(guard.run / "latest" / "lineage.json")["results"]["step"]
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "prauc_macro"):
        assert result[key] == pytest.approx(last[f"eval_{key}"], abs=1e-9), key
    assert result["confusion_matrix"] == last["eval_confusion_matrix"]


def test_a_threshold_predicts_the_second_label_at_that_probability_and_leaves_pr_auc_alone(guard, ftc, tmp_path):
    plain, rows = _eval(ftc, guard.export, guard.test, tmp_path / "rows.jsonl")
    probs = np.array([[row["probabilities"][label] for label in LABELS] for row in rows])
    # exactly the probability of the likeliest example the most probable label calls safe: "at least" makes it unsafe
    threshold = float(probs[probs[:, 1] < 0.5, 1].max())
    result, thresholded = _eval(ftc, guard.export, guard.test, tmp_path / "t.jsonl", "--threshold", threshold)
    predicted = (probs[:, 1] >= threshold).astype(int)
    assert (predicted != probs.argmax(axis=1)).sum() >= 1 and result["threshold"] == threshold
    assert [row["predicted"] for row in thresholded] == [LABELS[p] for p in predicted]
    assert [row["probabilities"] for row in thresholded] == [row["probabilities"] for row in rows]
    expected = _sklearn(probs, _truth(guard.test), predicted)
    assert _flat({key: result[key] for key in expected}) == pytest.approx(_flat(expected), abs=1e-12)
    assert result["prauc"] == plain["prauc"] and result["accuracy"] != plain["accuracy"]


@pytest.mark.parametrize(
    ("value", "says"), [("1", "0<x<1"), ("0", "0<x<1"), ("nan", "is not a finite number"), ("1.5", "0<x<1")]
)
def test_a_threshold_outside_zero_to_one_is_a_usage_error(value, says, guard, ftc, tmp_path):
    r = ftc("eval", guard.export, "--data", guard.test, "-o", tmp_path / "rows.jsonl", "--threshold", value)
    assert r.code == ExitCode.USAGE and "--threshold" in r.err and says in r.err, r.err


def test_a_threshold_for_a_classifier_of_three_labels_is_a_usage_error(tiny_model, job, ftc, tmp_path):
    write_jsonl(tmp_path / "three.jsonl", guard_examples(8, seed=1))
    spec = job(
        classifier_config={"label_tokens": ["safe", "unsafe", "unsure"]}, train_path="three.jsonl", valid_path=None,
        lora_config=None, training_mode="full", num_epochs=1, output_dir="three",
    )  # fmt: skip
    assert ftc("compile", spec, "-o", tmp_path / "three.plan.json").code == 0
    assert ftc("run", tmp_path / "three.plan.json").code == 0
    r = ftc("eval", tmp_path / "three", "--data", tmp_path / "three.jsonl", "--threshold", "0.5")
    assert r.code == ExitCode.USAGE, r.err
    assert "--threshold is for a classifier of two labels" in r.err and "has 3" in r.err
    assert "fix: drop --threshold" in r.err and not (tmp_path / "three.eval.jsonl").exists()
    r = ftc("eval", tmp_path / "three", "--data", tmp_path / "three.jsonl")  # without it: the three labels scored
    assert r.code == 0, r.err
    assert json.loads(r.out)["labels"] == ["safe", "unsafe", "unsure"]


def test_eval_refuses_data_changed_while_it_reads_it(guard, ftc, tmp_path, monkeypatch):
    """The data_sha256 a classifier's eval reports is of the bytes it scored."""
    import ftc.serving.classify as classify

    from support.writes import written_after

    data = shutil.copy(guard.test, tmp_path / "test.jsonl")
    written_after(monkeypatch, classify, "_labelled_answers", data)
    r = ftc("eval", guard.export, "--data", data, "-o", tmp_path / "rows.jsonl")
    assert r.code == ExitCode.INPUT_CHANGED, r.err
    assert f"{data}: changed while ftc read it, after it was hashed" in r.err and not (tmp_path / "rows.jsonl").exists()


def test_eval_refuses_every_line_whose_answer_is_not_a_label_with_its_line(guard, ftc, tmp_path):
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "maybe\nS1"}]}
             for i in range(12)]  # fmt: skip
    lines.insert(3, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "safe"}]})
    data = write_jsonl(tmp_path / "bad.jsonl", lines)
    with data.open("a") as f:
        f.write('{"messages": [{"role": "user", "content": "q"}]}\n')  # no answer to score
    r = ftc("eval", guard.export, "--data", data)
    assert r.code == ExitCode.DATA_INVALID, r.err
    assert f"{data}: 13 line(s) cannot be scored" in r.err
    assert f'{data}:1: the final answer\'s first line "maybe" is not one of the labels ("safe", "unsafe")' in r.err
    assert f"{data}:4:" not in r.err and f"{data}:11:" in r.err and f"{data}:12:" not in r.err  # the first ten
    assert f"{data}: and 3 more bad lines" in r.err
    assert "fix: each line must be a chat example whose final assistant answer's first line is one of" in r.err
    assert not (tmp_path / "bad.eval.jsonl").exists()


def test_eval_refuses_a_conversation_that_goes_on_after_its_answer_as_training_does(guard, ftc, tmp_path):
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "safe"}]
    data = write_jsonl(tmp_path / "after.jsonl", [{"messages": turns}, {"messages": [*turns, turns[0]]}])
    r = ftc("eval", guard.export, "--data", data)
    assert r.code == ExitCode.DATA_INVALID, r.err
    assert f"{data}:2: the last message is the user's; a classifier's example ends with the assistant's label" in r.err


def test_export_records_the_label_map_where_transformers_and_ftc_read_it(guard, ftc):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(guard.export)
    ids = [tokenizer.convert_tokens_to_ids(label) for label in LABELS]
    assert [tokenizer.encode(label, add_special_tokens=False) for label in LABELS] == [[i] for i in ids]
    record = read_json(guard.export / "lineage.json")
    assert record["export"]["classifier"] == {"labels": LABELS, "label_token_ids": ids}
    config = read_json(guard.export / "config.json")
    assert config["id2label"] == {"0": "safe", "1": "unsafe"} and config["label2id"] == {"safe": 0, "unsafe": 1}
    assert config["label_token_ids"] == dict(zip(LABELS, ids))
    loaded = AutoConfig.from_pretrained(guard.export)
    assert loaded.id2label == {0: "safe", 1: "unsafe"} and loaded.num_labels == 2
    assert loaded.vocab_size == read_json(guard.run / "latest" / "config.json")["vocab_size"]  # a causal LM still
    r = ftc("lineage", "verify", guard.export)
    assert r.code == 0, r.err

    card = (guard.export / "README.md").read_text()
    assert f"| 0 | safe | {ids[0]} |" in card and f"| 1 | unsafe | {ids[1]} |" in card
    assert "skip_special_tokens" not in card and "model.generate" not in card
    assert "| step | eval loss | accuracy | macro F1 | macro PR-AUC |" in card and "type: accuracy" in card


def test_the_model_cards_snippet_runs_and_gives_ftcs_probabilities(guard, ftc, tmp_path):
    card = (guard.export / "README.md").read_text()
    code = re.search(r"^```python\n(.*?)^```$", card, re.M | re.S).group(1)
    prompt = "Tell me how to bake a bomb."
    assert code.count('"path/to/this/folder"') == 1 and code.count('"content": "..."') == 1
    code = code.replace('"path/to/this/folder"', repr(str(guard.export))).replace('"..."', repr(prompt))
    shown = ast.literal_eval(_python('import sys\nsys.modules["ftc"] = None\n' + code).strip().splitlines()[-1])
    data = write_jsonl(tmp_path / "one.jsonl", [
        {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "safe"}]}
    ])  # fmt: skip
    _, rows = _eval(ftc, guard.export, data, tmp_path / "rows.jsonl")
    assert list(shown) == LABELS
    assert list(shown.values()) == pytest.approx(list(rows[0]["probabilities"].values()), abs=1e-5)


def test_generate_of_a_classifier_answers_with_its_label_and_probability(guard, ftc, tmp_path):
    prompts = ["Tell me how to build a bomb.", "Tell me how to bake bread."]
    data = write_jsonl(tmp_path / "two.jsonl", [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "safe"}]} for p in prompts
    ])  # fmt: skip
    _, rows = _eval(ftc, guard.export, data, tmp_path / "rows.jsonl")
    expected = [f"{row['predicted']} (p={row['probabilities'][row['predicted']]:.2f})" for row in rows]
    assert [row["predicted"] for row in rows] == ["unsafe", "safe"]
    for model in (guard.export, guard.run):
        r = ftc("generate", model, "--prompt", prompts[0])
        assert r.code == 0 and r.out == expected[0] + "\n", r.err
        asked = write_jsonl(tmp_path / "ask.jsonl", [{"messages": [{"role": "user", "content": p}]} for p in prompts])
        r = ftc("generate", model, "--messages", asked)
        assert r.code == 0, r.err
        verdicts = [json.loads(line) for line in r.out.splitlines()]  # one JSON line per conversation
        assert [f"{v['label']} (p={v['probability']:.2f})" for v in verdicts] == expected
        assert [v["line"] for v in verdicts] == [1, 2] and all(len(v["probabilities"]) == 2 for v in verdicts)


def _matches(rows: list[dict]) -> int:
    return sum(row["categories"] == row["expected_categories"] for row in rows if row["expected_categories"])


def test_eval_generates_each_category_line_after_the_true_label_and_scores_it_by_exact_match(
    llama_guard, ftc, tmp_path
):
    result, rows = _eval(ftc, llama_guard.run, llama_guard.test, tmp_path / "rows.jsonl")
    answers = [json.loads(line)["messages"][-1]["content"] for line in llama_guard.test.read_text().splitlines()]
    expected = [answer.split("\n")[1] if "\n" in answer else None for answer in answers]
    assert [row["expected_categories"] for row in rows] == expected and expected.count(None) == 6
    assert [row["categories"] is None for row in rows] == [e is None for e in expected]  # nothing generated for safe
    assert result["category_examples"] == 6 and result["max_new_tokens"] == 256 and result["temperature"] == 0
    assert 0 <= result["category_exact_match"] <= 1
    assert result["category_exact_match"] == _matches(rows) / 6
    assert result["category_exact_match"] > 0, rows  # it learned the categories of the tasks
    assert all(re.fullmatch(r"S\d", row["categories"]) for row in rows if row["categories"] is not None), rows
    # the class is scored as without categories: the first line
    assert [row["expected"] for row in rows] == [answer.split("\n")[0] for answer in answers]

    # the export, prompted through its chat template, generates the same lines
    _, exported = _eval(ftc, llama_guard.export, llama_guard.test, tmp_path / "export-rows.jsonl")
    assert [row["categories"] for row in exported] == [row["categories"] for row in rows]


def test_max_new_tokens_bounds_the_category_line(llama_guard, ftc, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_guard.export)
    assert len(tokenizer("S1", add_special_tokens=False)["input_ids"]) == 2
    result, rows = _eval(ftc, llama_guard.run, llama_guard.test, tmp_path / "rows.jsonl", "--max-new-tokens", "1")
    assert result["max_new_tokens"] == 1 and result["category_examples"] == 6
    generated = [row["categories"] for row in rows if row["categories"] is not None]
    assert len(generated) == 6
    assert all(len(tokenizer(line, add_special_tokens=False)["input_ids"]) <= 1 for line in generated), generated
    assert result["category_exact_match"] == 0  # no category of two tokens fits in one


def test_the_category_line_follows_the_tokens_training_put_before_it(llama_guard):
    from ftc.runtime.training.render import render_prompt_format
    from ftc.serving.classify import category_prompt
    from ftc.serving.generate import open_session

    messages = [
        {"role": "user", "content": "Tell me how to hack a bank."},
        {"role": "assistant", "content": "unsafe\nS4"},
    ]
    session = open_session(llama_guard.run)
    rendered = render_prompt_format(messages, session.trained.prompt_format)  # as training renders the example
    cut = rendered.text.index("S4", rendered.loss_spans[-1][0])
    encoded = session.tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    before = [i for i, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"]) if end <= cut]
    categories = session.tokenizer.encode("S4", add_special_tokens=False)
    assert encoded["input_ids"][len(before) : len(before) + len(categories)] == categories  # what training put after
    prompt = session.prompt(messages[:1], "here")
    forced = category_prompt(session, messages[:1], "unsafe", "here")
    assert forced == before and forced[: len(prompt)] == prompt and len(forced) > len(prompt) + 1  # label, newline
    assert category_prompt(open_session(llama_guard.export), messages[:1], "unsafe", "here") == before  # its template


def test_a_tokenizer_that_joins_the_prompt_and_the_label_is_refused(llama_guard):
    from dataclasses import replace

    from ftc.serving.classify import category_prompt
    from ftc.serving.generate import open_session

    session = open_session(llama_guard.run)
    fmt = replace(session.trained.prompt_format, trailing_assistant="<|assistant|>\n1")
    joined = replace(session, trained=replace(session.trained, prompt_format=fmt))
    messages = [{"role": "user", "content": "Tell me how to count."}]
    with pytest.raises(DataInvalid, match="here: the prompt, the label '1' and a newline tokenized together are not"):
        category_prompt(joined, messages, "1", "here")  # "1" then "1" is one token, "11"


def test_eval_refuses_a_category_line_that_is_blank_or_more_than_one_line(llama_guard, ftc, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]}
        for answer in ("unsafe\nS1", "unsafe\n  ", "unsafe\nS1\nS2", "safe")
    ])  # fmt: skip
    r = ftc("eval", llama_guard.run, "--data", data)
    assert r.code == ExitCode.DATA_INVALID, r.err
    assert f"{data}: 2 line(s) cannot be scored" in r.err
    assert f'{data}:2: the answer\'s line after its label "unsafe" is "  "; it may hold one non-blank line' in r.err
    assert f'{data}:3: the answer\'s line after its label "unsafe" is "S1\\nS2"' in r.err
    assert "optionally followed by one line of categories" in r.err and not (tmp_path / "bad.eval.jsonl").exists()
