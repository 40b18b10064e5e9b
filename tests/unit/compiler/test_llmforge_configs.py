"""llmforge's tested training configs (tests/data/llmforge/configs/, verbatim: only data and weight locations made
local, as its README says) compile in ftc: no key is unknown or refused and every model is known. The two
preference-tuning configs wait for that task: they give its not-yet problem, and only that."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.errors import ExitCode

from conftest import REPO, age

LLMFORGE = REPO / "tests" / "data" / "llmforge"
CONFIGS = sorted(str(p.relative_to(LLMFORGE / "configs")) for p in (LLMFORGE / "configs").rglob("*.yaml"))
PREFERENCE = {c for c in CONFIGS if "fine-tune-preference" in c}
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


def test_the_configs_are_all_here():
    assert len(CONFIGS) == 19 and len(PREFERENCE) == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_each_llmforge_config_compiles_verbatim(job_folder, ftc, tmp_path, config):
    spec = job_folder / "job.yaml"
    shutil.copy(LLMFORGE / "configs" / config, spec)
    r = ftc("compile", spec, "-o", tmp_path / "plan.json")
    for refused in ("unknown key", "does not take", "unknown model_id"):
        assert refused not in r.err, r.err
    if config in PREFERENCE:
        assert r.code == ExitCode.SPEC_INVALID
        problems = [line for line in r.err.splitlines() if line.startswith(str(spec))]
        assert len(problems) == 1, r.err
        assert "$.preference_tuning_config: llmforge's preference tuning task" in problems[0] or (
            "$.task: llmforge's preference tuning task" in problems[0]
        )
        return
    assert r.code == 0, r.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["spec"]["model_id"] in (LLMFORGE / "configs" / config).read_text()
