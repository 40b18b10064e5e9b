"""task: classification end to end on a tiny model: a guard-style classifier (safe / unsafe, the label following
from the prompt) trained with LoRA, its labels one token each (added to the tokenizer, saved with every
checkpoint), the label token the only trained token, and a second stage continuing the first's adapter, labels
and all."""

from __future__ import annotations

import json

import pytest

from ftc.errors import ExitCode

from conftest import metrics
from support.guard import LABELS, guard_examples
from support.models import PROMPT_FORMAT, write_jsonl

GUARD = {"classifier_config": {"label_tokens": LABELS}}
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture
def guard_run(job, ftc, tmp_path):
    """Compile and run a guard classifier: ``guard_run(name, **spec)`` -> its output folder."""
    write_jsonl(tmp_path / "guard-train.jsonl", guard_examples(32, seed=1))
    write_jsonl(tmp_path / "guard-valid.jsonl", guard_examples(8, seed=2))

    def run(name: str, **overrides):
        spec = dict(
            GUARD, train_path="guard-train.jsonl", valid_path="guard-valid.jsonl", num_epochs=2,
            learning_rate=1e-2, train_batch_size_per_device=8, output_dir=name,
        )  # fmt: skip
        spec.update(overrides)
        r = ftc("compile", job(name=f"{name}.yaml", **spec), "-o", tmp_path / f"{name}.plan.json")
        assert r.code == 0, r.err
        r = ftc("run", tmp_path / f"{name}.plan.json")
        assert r.code == 0, r.err
        return tmp_path / name

    return run


@pytest.fixture(scope="module")
def full_vocab_model(tmp_path_factory):
    """A tiny model with no spare embedding rows, as a real model has none: its added labels grow the embeddings."""
    from transformers import AutoTokenizer

    from support.models import build_tiny_model, build_tokenizer

    out = tmp_path_factory.mktemp("full-vocab") / "model"
    build_tokenizer(out)
    return build_tiny_model(out, vocab_size=len(AutoTokenizer.from_pretrained(out)), tokenizer=False)


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def test_a_lora_classifier_adds_its_labels_as_one_token_each_and_saves_them_with_each_checkpoint(
    guard_run, full_vocab_model
):
    out = guard_run("stage1", lora_config=LORA, initial_base_model_ckpt_path=str(full_vocab_model))
    tokenizer = _tokenizer(out / "latest")
    ids = [tokenizer.encode(label, add_special_tokens=False) for label in LABELS]
    assert all(len(one) == 1 for one in ids), ids
    config = json.loads((out / "latest" / "adapter_config.json").read_text())
    assert sorted({i for rows in config["trainable_token_indices"].values() for i in rows}) == sorted(
        one[0] for one in ids
    )
    evals = metrics(out, "eval")
    assert "eval_accuracy" in evals[-1] and "eval_prauc_macro" in evals[-1], evals[-1]
    # the adapter holds the LoRA weights and the labels' rows, never the grown embedding matrix whole
    from safetensors import safe_open

    with safe_open(out / "latest" / "adapter_model.safetensors", "pt") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
    rows = len(tokenizer)
    assert rows > json.loads((full_vocab_model / "config.json").read_text())["vocab_size"]  # the labels grew it
    assert not [n for n, shape in shapes.items() if shape and shape[0] == rows], shapes
    assert any("trainable_tokens" in n for n in shapes), shapes


def test_a_second_stage_continues_the_first_classifiers_adapter_with_its_labels(guard_run, full_vocab_model):
    base = str(full_vocab_model)  # the labels grow its embeddings: stage 2 grows them again and loads the rows
    first = guard_run("stage1", lora_config=LORA, initial_base_model_ckpt_path=base)
    second = guard_run(
        "stage2", lora_config=None, initial_adapter_model_ckpt_path="stage1/latest", initial_base_model_ckpt_path=base
    )
    before, after = _tokenizer(first / "latest"), _tokenizer(second / "latest")
    assert [before.encode(x, add_special_tokens=False) for x in LABELS] == [
        after.encode(x, add_special_tokens=False) for x in LABELS
    ]
    stage1_end = metrics(first, "eval")[-1]["eval_loss"]
    stage2_start = metrics(second, "eval")[0]["eval_loss"]
    assert stage2_start == pytest.approx(stage1_end, rel=1e-4)  # the rows trained in stage 1 came back


def test_data_inspect_of_a_classifier_marks_the_label_token_as_the_only_trained_token(job, ftc, tmp_path):
    write_jsonl(tmp_path / "guard-train.jsonl", guard_examples(8, seed=1))
    spec = job(**GUARD, train_path="guard-train.jsonl", valid_path=None)
    r = ftc("data", "inspect", spec, "-n", "2", "--no-color")
    assert r.code == 0, r.err
    assert "task classification: only the final answer's label token is trained (marked)" in r.out
    first, second = (e["messages"] for e in guard_examples(2, seed=1))
    # the label alone marked, the end of turn after it context; one token trained per example
    assert f"{first[0]['content']}</s>\n<|assistant|>\n⟦safe⟧</s>\n" in r.out
    assert f"{second[0]['content']}</s>\n<|assistant|>\n⟦unsafe⟧</s>\n" in r.out
    assert r.out.count(" tokens, 1 trained)") == 2
    boundaries = ftc("data", "inspect", spec, "-n", "1", "--no-color", "--boundaries").out
    assert "¦\n⟦safe⟧</s>¦" in boundaries  # one token, its boundaries around it


def test_a_fully_fine_tuned_classifier_learns_the_labels_beyond_the_majority_class(guard_run):
    out = guard_run(
        "full", lora_config=None, training_mode="full", num_epochs=8, learning_rate=1e-2, train_batch_size_per_device=4
    )
    evals = metrics(out, "eval")
    assert evals[0]["eval_accuracy"] <= 0.5  # before training: at best the majority class (half of each label)
    assert evals[-1]["eval_accuracy"] > 0.5, [e["eval_accuracy"] for e in evals]
    tokenizer = _tokenizer(out / "latest")
    assert all(len(tokenizer.encode(x, add_special_tokens=False)) == 1 for x in LABELS)
    from safetensors import safe_open

    with safe_open(str(out / "latest" / "model.safetensors"), "pt") as f:
        rows = f.get_tensor("model.embed_tokens.weight").shape[0]
    assert rows >= len(tokenizer)  # every label has its row in the checkpoint


def test_a_label_the_template_merges_into_a_larger_token_stops_the_run_at_its_line(job, ftc, tmp_path):
    # "4" is one token of the tiny tokenizer (kept as the label), but the template's space before the answer makes
    # " 4" one token, which is not the label's: training it would train a token serving never reads as the label
    fmt = {**PROMPT_FORMAT, "assistant": "<|assistant|> {instruction}</s>\n", "trailing_assistant": "<|assistant|> "}
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]}
             for i, a in enumerate(["4", "9"] * 4)]  # fmt: skip
    write_jsonl(tmp_path / "digits.jsonl", lines)
    spec = job(
        classifier_config={"label_tokens": ["4", "9"]}, train_path="digits.jsonl", valid_path=None,
        generation_config={"prompt_format": fmt}, output_dir="digits",
    )  # fmt: skip
    r = ftc("compile", spec, "-o", tmp_path / "digits.plan.json")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "digits.plan.json")
    assert r.code == ExitCode.DATA_INVALID, r.err
    assert "digits.jsonl:1: the label '4' is not its own token where the template renders it: tokens [' 4']" in r.err
    assert "(7 more bad examples)" in r.err


def test_a_classifier_whose_unsafe_answers_name_their_category_trains_the_label_and_the_category_line(
    job, ftc, tmp_path
):
    write_jsonl(tmp_path / "guard-train.jsonl", guard_examples(16, seed=1, categories=True))
    write_jsonl(tmp_path / "guard-valid.jsonl", guard_examples(4, seed=2, categories=True))
    spec = job(**GUARD, train_path="guard-train.jsonl", valid_path="guard-valid.jsonl", output_dir="categories")
    r = ftc("data", "inspect", spec, "-n", "2", "--no-color")
    assert r.code == 0, r.err
    second = guard_examples(2, seed=1, categories=True)[1]["messages"]
    assert second[1]["content"].startswith("unsafe\nS")
    # the label, its category line and the end of turn trained; a safe answer's label alone
    assert f"<|assistant|>\n⟦{second[1]['content']}</s>\n⟧" in r.out
    assert "<|assistant|>\n⟦safe⟧</s>\n" in r.out
    r = ftc("compile", spec, "-o", tmp_path / "categories.plan.json")
    assert r.code == 0, r.err
    r = ftc("run", tmp_path / "categories.plan.json")
    assert r.code == 0, r.err
    assert "%, the label tokens)" in r.err  # the run log says what a classifier trains
    evals = metrics(tmp_path / "categories", "eval")
    assert [e["eval_classes"]["unsafe"]["support"] for e in evals] == [2] * len(evals)  # one answer per example


def test_a_lora_classifier_that_saves_the_embeddings_whole_trains_its_labels_in_them(guard_run):
    lora = {**LORA, "modules_to_save": ["embed_tokens", "lm_head"]}
    out = guard_run("whole", lora_config=lora, num_epochs=1)
    config = json.loads((out / "latest" / "adapter_config.json").read_text())
    assert not config.get("trainable_token_indices")
    assert {"embed_tokens", "lm_head"} <= set(config["modules_to_save"])
    assert len(metrics(out, "eval")) == 2
