"""task: preference_tuning end to end on a tiny model: an SFT stage that answers in the rejected style more often
than the chosen one, then a DPO stage from its checkpoint, whose greedy answers switch to the chosen style; the
reference log-probabilities pinned in the lineage and read back from the cache on --resume; the chain verified,
reproduced bitwise, exported and served."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import metrics, read_json
from support.models import build_tiny_model, write_jsonl
from support.preference import CHOSEN, style_chats, style_pairs

pytestmark = pytest.mark.slow

LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"]}
BASE = {"model_id": "ftc-tests/tiny-llama", "context_length": 64, "num_epochs": 3, "train_batch_size_per_device": 8}


def _ftc(folder: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTC_CACHE_DIR": str(folder / "cache")}  # the module's own cache, shared by its runs
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *map(str, args)], cwd=folder, env=env, capture_output=True, text=True
    )


def _run(folder: Path, name: str, spec: dict) -> subprocess.CompletedProcess:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    r = _ftc(folder, "compile", f"{name}.yaml", "-o", f"{name}.plan.json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _ftc(folder, "run", f"{name}.plan.json")
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, str]:
    """SFT (full fine-tuning, a third of the answers in the chosen style), then DPO (a new LoRA adapter on the SFT
    weights) on held-out-free style pairs: (the folder, the DPO run's log)."""
    folder = tmp_path_factory.mktemp("dpo")
    build_tiny_model(folder / "model")
    write_jsonl(folder / "sft.jsonl", style_chats(64, seed=1, chosen_share=0.34))
    write_jsonl(folder / "sft-valid.jsonl", style_chats(8, seed=2, chosen_share=0.34))
    write_jsonl(folder / "pairs.jsonl", style_pairs(64, seed=3))
    write_jsonl(folder / "pairs-valid.jsonl", style_pairs(16, seed=4))
    write_jsonl(folder / "held-out.jsonl", [{"messages": p["chosen"]} for p in style_pairs(16, seed=5)])
    sft = dict(
        BASE, initial_base_model_ckpt_path="model", train_path="sft.jsonl", valid_path="sft-valid.jsonl",
        training_mode="full", num_epochs=6, learning_rate=3e-3, output_dir="sft",
    )  # fmt: skip
    _run(folder, "sft", sft)
    dpo = dict(
        BASE, initial_base_model_ckpt_path="sft/latest", train_path="pairs.jsonl", valid_path="pairs-valid.jsonl",
        lora_config=LORA, learning_rate=2e-3, preference_tuning_config={"beta": 0.5}, output_dir="dpo",
        evaluation={"generate": True, "max_new_tokens": 8},
    )  # fmt: skip
    return folder, _run(folder, "dpo", dpo).stderr


def _exact_match(folder: Path, model: str) -> float:
    r = _ftc(folder, "eval", model, "--data", "held-out.jsonl", "-o", f"{model}.eval.jsonl")
    assert r.returncode == 0, r.stderr[-3000:]
    return yaml.safe_load(r.stdout)["exact_match"]


def test_dpo_after_sft_moves_the_rewards_and_the_greedy_answers_to_the_chosen_style(chain):
    folder, log = chain
    evals = metrics(folder / "dpo", "eval")
    assert evals[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)  # the policy is its reference
    assert evals[0]["eval_reward_accuracy"] == 0.0  # every reward 0: none above another
    assert evals[-1]["eval_reward_accuracy"] >= 0.9, [e["eval_reward_accuracy"] for e in evals]
    assert evals[-1]["eval_reward_margin"] > 0.5 and evals[-1]["eval_loss"] < 0.5
    assert evals[0]["exact_match"] == 0.0 and evals[-1]["exact_match"] >= 0.9  # chosen answers generated
    assert "reward accuracy 1.000" in log and "loss: sigmoid (beta 0.5)" in log
    assert _exact_match(folder, "sft") == 0.0  # the SFT model answers in the rejected style
    assert _exact_match(folder, "dpo") >= 0.9  # the DPO model in the chosen one


def test_the_reference_logprobs_are_pinned_and_read_back_from_the_cache_on_resume(chain):
    folder, log = chain
    assert "reference log-probabilities of the train pairs computed: sha256:" in log
    steps = sorted((folder / "dpo" / "checkpoints").glob("step-*"))
    pinned = {d["role"]: d["reference_logprobs"] for d in read_json(steps[-1] / "lineage.json")["datasets"]}
    assert pinned["train"]["pairs"] == 64 and pinned["valid"]["pairs"] == 16
    adapter = (steps[-1] / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(steps[-1])  # stopped before its last epoch
    (folder / "dpo" / "summary.json").unlink()
    r = _ftc(folder, "run", "dpo.plan.json", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"reference log-probabilities of the train pairs read from the cache: {pinned['train']['digest'][:19]}" in (
        r.stderr
    )
    again = {d["role"]: d["reference_logprobs"] for d in read_json(steps[-1] / "lineage.json")["datasets"]}
    assert again == pinned
    assert (steps[-1] / "adapter_model.safetensors").read_bytes() == adapter  # resumed to the same weights


def test_the_chain_verifies_reproduces_bitwise_and_serves(chain, tmp_path):
    folder, _ = chain
    r = _ftc(folder, "lineage", "verify", "dpo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 lineage record(s) in the chain recomputed" in r.stdout  # the DPO checkpoint's, then the SFT one's
    assert "base_model sft/latest" in r.stdout
    r = _ftc(folder, "reproduce", "dpo", "-o", tmp_path / "rerun")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\nbitwise reproduced: " in "\n" + r.stdout, r.stdout  # (DeepSpeed prints to stdout before it)
    pins = [
        {d["role"]: d["reference_logprobs"] for d in read_json(out / "best" / "lineage.json")["datasets"]}
        for out in (folder / "dpo", tmp_path / "rerun")
    ]
    assert pins[0] == pins[1]  # the rerun used the same reference numbers
    r = _ftc(folder, "export", "dpo", "-o", tmp_path / "export")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _ftc(folder, "generate", tmp_path / "export", "--prompt", "What is 3 + 4?", "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == CHOSEN


def test_a_loss_stuck_at_ln_2_is_warned_about_with_its_likely_causes(chain):
    folder, _ = chain
    stuck = dict(
        BASE, initial_base_model_ckpt_path="sft/latest", train_path="pairs.jsonl", valid_path="pairs-valid.jsonl",
        lora_config=LORA, learning_rate=1e-9, num_epochs=1, preference_tuning_config={"beta": 0.5},
        output_dir="stuck",
    )  # fmt: skip
    log = _run(folder, "stuck", stuck).stderr
    assert "reference log-probabilities of the train pairs read from the cache" in log  # the same reference
    assert "warning: the eval loss is 0.6931, still ln 2 = 0.6931: the model has not moved off the reference" in log
    assert "learning_rate too low" in log


def test_dpo_continuing_an_sft_adapter_takes_the_adapted_model_as_its_reference(chain):
    folder, _ = chain
    sft = dict(
        BASE, initial_base_model_ckpt_path="model", train_path="sft.jsonl", valid_path="sft-valid.jsonl",
        lora_config=LORA, learning_rate=1e-2, num_epochs=1, output_dir="sft-lora",
    )  # fmt: skip
    _run(folder, "sft-lora", sft)
    dpo = dict(
        BASE, initial_base_model_ckpt_path="model", initial_adapter_model_ckpt_path="sft-lora/latest",
        train_path="pairs.jsonl", valid_path="pairs-valid.jsonl", learning_rate=2e-3, num_epochs=1,
        preference_tuning_config={"beta": 0.5}, output_dir="dpo-lora",
    )  # fmt: skip
    log = _run(folder, "dpo-lora", dpo).stderr
    assert "continuing a LoRA adapter on your own base weights" in log
    first, last = metrics(folder / "dpo-lora", "eval")
    # the policy starts as its reference, the SFT adapter on its base (not the base alone): the loss is ln 2
    assert first["eval_loss"] == pytest.approx(math.log(2), abs=1e-6) and first["eval_reward_margin"] == 0.0
    assert last["eval_reward_margin"] > 0
    r = _ftc(folder, "lineage", "verify", "dpo-lora")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "adapter sft-lora/latest" in r.stdout
