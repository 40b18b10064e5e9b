"""llmforge's tested training configs (tests/data/llmforge/configs/, verbatim: only data and weight locations made
local, as its README says) compile in ftc: no key is unknown or refused and every model is known. The preference
(DPO) configs, the two tested ones and the earlier template's, compile on preference pairs as task
preference_tuning with their preference_tuning_config."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, age

LLMFORGE = REPO / "tests" / "data" / "llmforge"
CONFIGS = sorted(str(p.relative_to(LLMFORGE / "configs")) for p in (LLMFORGE / "configs").rglob("*.yaml"))
PREFERENCE = {c for c in CONFIGS if "fine-tune-preference" in c}
#: llmforge's DPO configs (the earlier template's too) -> their reference pass: (concurrency, batch_size)
DPO = {
    "configs/end-to-end-examples/fine-tune-preference/configs/dpo-training/mistral_a10.yaml": (4, 2),
    "configs/end-to-end-examples/fine-tune-preference/configs/dpo-training/mistral_a100.yaml": (2, 16),
    "earlier/end-to-end-examples/fine-tune-preference/configs/mistral_dpo_summarization.yaml": (4, 2),
}
#: llmforge's LoRA checkpoint the continue-from-checkpoint config names (weights/adapter): its adapter_config.json
ADAPTER = {
    "peft_type": "LORA",
    "base_model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens",
                       "lm_head"],
    "modules_to_save": None,  # as peft writes it; the config says []
    "bias": "none",
    "task_type": "CAUSAL_LM",
}  # fmt: skip


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory):
    """One job folder as the README describes: chat data, the DeepSpeed files, and an adapter for the config that
    continues one (a real safetensors file with one LoRA tensor of Llama 3 8B's shape)."""
    from safetensors.numpy import save_file

    from support.models import arithmetic_examples, write_jsonl

    folder = tmp_path_factory.mktemp("llmforge")
    write_jsonl(folder / "data" / "train.jsonl", arithmetic_examples(8, seed=1, system="You are a calculator."))
    write_jsonl(folder / "data" / "valid.jsonl", arithmetic_examples(4, seed=2))
    shutil.copytree(LLMFORGE / "deepspeed_configs", folder / "deepspeed_configs")
    adapter = folder / "weights" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps(ADAPTER))
    import numpy as np

    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({name: np.zeros((8, 4096), dtype=np.float32)}, str(adapter / "adapter_model.safetensors"))
    age(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    """The same job folder for llmforge's DPO configs: preference pairs as its data."""
    from support.models import write_jsonl
    from support.preference import preference_pairs

    folder = tmp_path_factory.mktemp("llmforge-dpo")
    write_jsonl(folder / "data" / "train.jsonl", preference_pairs(8, seed=1))
    write_jsonl(folder / "data" / "valid.jsonl", preference_pairs(4, seed=2))
    shutil.copytree(LLMFORGE / "deepspeed_configs", folder / "deepspeed_configs")
    age(folder)
    return folder


def test_the_configs_are_all_here():
    assert len(CONFIGS) == 19 and len(PREFERENCE) == 2
    assert {f"configs/{c}" for c in PREFERENCE} < set(DPO)


@pytest.mark.parametrize("config", CONFIGS)
def test_each_llmforge_config_compiles_verbatim(job_folder, pairs_folder, ftc, tmp_path, config):
    spec = (pairs_folder if config in PREFERENCE else job_folder) / "job.yaml"
    shutil.copy(LLMFORGE / "configs" / config, spec)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    for refused in ("unknown key", "does not take", "unknown model_id"):
        assert refused not in r.err, r.err
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["spec"]["model_id"] in (LLMFORGE / "configs" / config).read_text()
    assert ("preference_tuning_config" in plan["spec"]) == (config in PREFERENCE)


@pytest.mark.parametrize("config, reference", DPO.items(), ids=list(DPO))
def test_llmforges_dpo_configs_train_preference_tuning_with_their_settings(
    pairs_folder, ftc, tmp_path, config, reference
):
    spec = pairs_folder / "job.yaml"
    shutil.copy(LLMFORGE / config, spec)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["spec"]["task"] == "preference_tuning"
    assert plan["inputs"]["train"]["records"] == 8 and plan["inputs"]["valid"]["records"] == 4
    settings = plan["spec"]["preference_tuning_config"]
    assert settings["beta"] == 0.01 and settings["loss_type"] == "sigmoid"
    concurrency, batch_size = reference
    assert settings["logprob_processor_scaling_config"]["concurrency"] == concurrency
    assert settings["logprob_processor_scaling_config"]["batch_size"] == batch_size
    (resource,) = settings["logprob_processor_scaling_config"]["custom_resources"]
    assert resource.startswith("accelerator_type:A10")
