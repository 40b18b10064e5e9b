"""llmforge's DeepSpeed files, verbatim, train 2 processes on CPU (gloo) with ftc's settings in their "auto"s:
ZeRO-3 with the optimizer and the parameters offloaded to CPU memory, ZeRO-2, and ZeRO-3 with hpZ."""

from __future__ import annotations

import shutil

import pytest

from conftest import REPO, ftc_process, metrics, read_json
from support.models import arithmetic_examples, build_tiny_gemma2, write_jsonl

pytestmark = pytest.mark.slow

FILES = REPO / "tests" / "data" / "llmforge" / "deepspeed_configs"


def _ftc(*args) -> tuple[int, str]:
    proc = ftc_process(*args)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.mark.parametrize(
    ("name", "stage"), [("zero_3_offload_optim+param.json", 3), ("zero_2.json", 2), ("zero_3_hpz.json", 3)]
)
def test_two_processes_train_with_an_llmforge_deepspeed_file_as_given(job, tmp_path, name, stage):
    shutil.copy(FILES / name, tmp_path / name)
    write_jsonl(tmp_path / "train32.jsonl", arithmetic_examples(32, seed=4))
    spec = job(
        train_path="train32.jsonl",
        lora_config=None,
        learning_rate=3e-3,
        num_devices=2,
        train_batch_size_per_device=8,
        deepspeed={"config_path": name},
    )
    code, out = _ftc("compile", spec, "-o", tmp_path / "p.json")
    assert code == 0, out
    ds = read_json(tmp_path / "p.json")["deepspeed"]
    assert (ds["train_micro_batch_size_per_gpu"], ds["train_batch_size"]) == (8, 16)
    if name == "zero_3_hpz.json":  # ZeRO++'s secondary partition: 8 ranks, or all there are
        assert ds["zero_optimization"]["zero_hpz_partition_size"] == 8
    elif stage == 3:
        assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
        assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    code, out = _ftc("run", tmp_path / "p.json")
    assert code == 0, out
    assert f"2 process(es) on cpu, fp32, ZeRO stage {stage}" in out  # precision auto: fp32 on CPU
    evals = [e["eval_loss"] for e in metrics(tmp_path / "output", "eval")]
    assert [t["step"] for t in metrics(tmp_path / "output", "train")] == [1, 2] and evals[-1] < evals[0], evals
    final = tmp_path / "output" / "checkpoints" / "step-000002"  # 32 examples / (8 x 2 processes)
    assert read_json(final / "lineage.json")["execution"]["zero_stage"] == stage
    from safetensors.torch import load_file

    weights = load_file(final / "model.safetensors")
    assert weights and all(t.numel() > 0 for t in weights.values())  # gathered from the partitions, not placeholders


def test_llmforges_gemma2_lora_and_its_offload_file_train_two_processes_on_a_tiny_gemma2(job, tmp_path):
    # training_configs/custom/google/gemma-2-27b/lora/8xA100-80G-512.yaml: its LoRA (every linear layer, and the
    # embeddings and output layer, which Gemma 2 ties) and its DeepSpeed file, ZeRO-3 with CPU offload
    name = "zero_3_offload_optim+param.json"
    shutil.copy(FILES / name, tmp_path / name)
    write_jsonl(tmp_path / "train32.jsonl", arithmetic_examples(32, seed=4))
    targets = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"]
    spec = job(
        model_id="ftc-tests/tiny-gemma2",
        initial_base_model_ckpt_path=str(build_tiny_gemma2(tmp_path / "gemma2")),
        train_path="train32.jsonl",
        lora_config={"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": targets, "modules_to_save": []},
        learning_rate=1e-2,
        num_devices=2,
        train_batch_size_per_device=8,
        deepspeed={"config_path": name},
    )
    code, out = _ftc("compile", spec, "-o", tmp_path / "p.json")
    assert code == 0, out
    code, out = _ftc("run", tmp_path / "p.json")
    assert code == 0, out
    assert "2 process(es) on cpu, fp32, ZeRO stage 3" in out
    evals = [e["eval_loss"] for e in metrics(tmp_path / "output", "eval")]
    assert evals[-1] < evals[0], evals
    adapter = read_json(tmp_path / "output" / "checkpoints" / "step-000002" / "adapter_config.json")
    assert {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]} == set(targets)
