"""A tiny random model of each family llmforge trains beyond Llama's layout (Mixtral's experts, Gemma 2's
soft-capping and tied output layer) compiles and trains through ftc on CPU, and bring-your-own weights whose
config.json is not the family's are refused at compile."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.errors import ExitCode
from ftc.spec.architectures import known_architecture

from conftest import age, metrics, read_json
from support.models import build_tiny_gemma2, build_tiny_mixtral

BUILDERS = {"mixtral": build_tiny_mixtral, "gemma2": build_tiny_gemma2}
#: what each family's checkpoint must still say about itself after training
OWN_FIELDS = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "gemma2": {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "tie_word_embeddings": True},
}


@pytest.fixture(scope="module")
def family_model(tmp_path_factory):
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = BUILDERS[family](tmp_path_factory.mktemp(family) / "model")
            age(built[family])
        return built[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "gemma2"])
def test_a_tiny_model_of_the_family_trains_full_and_its_checkpoint_is_still_the_family(trained, family_model, family):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out = trained(
        model_id=f"ftc-tests/tiny-{family}",
        initial_base_model_ckpt_path=str(family_model(family)),
        lora_config=None,
        num_epochs=1,
        train_batch_size_per_device=8,
        learning_rate=3e-3,
    )
    evals = [e["eval_loss"] for e in metrics(out, "eval")]
    assert [t["step"] for t in metrics(out, "train")] == [1, 2] and evals[-1] < evals[0], evals
    final = out / "checkpoints" / "step-000002"
    config = read_json(final / "config.json")
    assert config["model_type"] == family and OWN_FIELDS[family].items() <= config.items()
    with safe_open(final / "model.safetensors", "pt") as f:
        names = set(f.keys())
    if family == "gemma2":
        assert "lm_head.weight" not in names  # tied to the embeddings, as Gemma 2 publishes it
    else:
        assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in names  # the experts, as Mixtral publishes
    AutoModelForCausalLM.from_pretrained(final)  # loads back in plain transformers


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "gemma2"])
def test_an_all_linear_lora_adapter_trains_on_the_family(trained, family_model, family):
    out = trained(
        model_id=f"ftc-tests/tiny-{family}",
        initial_base_model_ckpt_path=str(family_model(family)),
        # Mixtral's experts are adapted as parameters (peft's target_parameters), which take no dropout
        lora_config={"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "lora_dropout": 0.0},
        num_epochs=1,
        train_batch_size_per_device=8,
        learning_rate=1e-2,
    )
    evals = [e["eval_loss"] for e in metrics(out, "eval")]
    assert evals[-1] < evals[0], evals
    adapter = read_json(out / "checkpoints" / "step-000002" / "adapter_config.json")
    leaves = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert {"q_proj", "o_proj"} <= leaves
    if family == "mixtral":  # the router and the experts too
        assert {"gate.weight", "gate_up_proj", "down_proj"} <= set(adapter["target_parameters"])
    else:
        assert {"gate_proj", "down_proj"} <= leaves


def _folder_saying(tmp_path, family_model, family: str, config: dict):
    """The tiny model's weights under a config.json that says ``config``."""
    folder = tmp_path / f"{family}-weights"
    shutil.copytree(family_model(family), folder)
    (folder / "config.json").write_text(json.dumps(config))
    age(folder)
    return folder


def test_gemma2_weights_whose_config_unties_the_output_layer_are_refused_for_the_missing_tensor(
    job, ftc, tmp_path, family_model
):
    config = read_json(family_model("gemma2") / "config.json") | {"tie_word_embeddings": False}
    folder = _folder_saying(tmp_path, family_model, "gemma2", config)
    r = ftc("compile", job(model_id="ftc-tests/tiny-gemma2", initial_base_model_ckpt_path=str(folder)), "-o", "p.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "the weights do not match the architecture of ftc-tests/tiny-gemma2 (checkpoint)" in r.err
    assert "1 tensor(s) missing: lm_head.weight" in r.err


@pytest.mark.slow
def test_llmforges_mixtral_lora_trains_on_a_tiny_mixtral(trained, family_model):
    # the LoRA of llmforge's tested Mixtral config (training_configs/custom/mistralai/Mixtral-8x7B/lora/16xA10-4k.yaml):
    # attention, embeddings and output layer ("mixtral does not have gate_proj, up_proj, down_proj")
    lora = {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj", "embed_tokens", "lm_head"],
        "bias": "none",
        "modules_to_save": [],
    }
    out = trained(
        model_id="ftc-tests/tiny-mixtral",
        initial_base_model_ckpt_path=str(family_model("mixtral")),
        lora_config=lora,
        num_epochs=1,
        train_batch_size_per_device=8,
        learning_rate=1e-2,
    )
    evals = [e["eval_loss"] for e in metrics(out, "eval")]
    assert evals[-1] < evals[0], evals
    adapter = read_json(out / "checkpoints" / "step-000002" / "adapter_config.json")
    assert {"embed_tokens", "lm_head", "q_proj"} <= {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]}


@pytest.mark.parametrize(
    ("model_id", "family", "change", "said"),
    [
        (
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "mixtral",
            {"num_local_experts": 4},
            "the weights' config.json has num_local_experts = 4 but mistralai/Mixtral-8x7B-Instruct-v0.1 has 8",
        ),
        (
            "google/gemma-2-9b-it",
            "gemma2",
            {"final_logit_softcapping": None},
            "the weights' config.json has no final_logit_softcapping but google/gemma-2-9b-it has 30.0",
        ),
        (
            "google/gemma-2-27b-it",
            "gemma2",
            {"attn_logit_softcapping": 0.0},
            "the weights' config.json has attn_logit_softcapping = 0.0 but google/gemma-2-27b-it has 50.0",
        ),
    ],
)
def test_weights_whose_config_is_not_the_named_family_are_refused(
    job, ftc, tmp_path, family_model, model_id, family, change, said
):
    config = {**known_architecture(model_id), **{k: v for k, v in change.items() if v is not None}}
    config = {k: v for k, v in config.items() if change.get(k, 0) is not None}
    folder = _folder_saying(tmp_path, family_model, family, config)
    r = ftc("compile", job(model_id=model_id, initial_base_model_ckpt_path=str(folder), context_length=None), "-o", "p")
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert said in r.err and "$.initial_base_model_ckpt_path" in r.err


def test_an_all_linear_lora_on_mixtral_with_dropout_is_refused_at_compile_not_inside_peft(
    job, ftc, tmp_path, family_model
):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}  # lora_dropout: the default 0.05
    spec = job(
        model_id="ftc-tests/tiny-mixtral", initial_base_model_ckpt_path=str(family_model("mixtral")), lora_config=lora
    )
    r = ftc("compile", spec, "-o", tmp_path / "p.json")
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.lora_config.lora_dropout: ftc-tests/tiny-mixtral (mixtral): the targets reach mlp.gate.weight, " in r.err
    assert "which peft adapts as parameters, not linear layers, and those take no dropout" in r.err
    assert "fix: set lora_dropout: 0" in r.err
