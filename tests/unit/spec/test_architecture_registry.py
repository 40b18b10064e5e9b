"""The families llmforge trains (Llama 2/3/3.1/3.2 and Llama Guard, Mistral, Mixtral, Gemma 2, Qwen 2.5): ftc knows
their published configurations, and what makes each family itself is compared with bring-your-own weights."""

from __future__ import annotations

import math

import pytest

from ftc.spec.architectures import Architecture, config_mismatches, known_architecture, known_model_ids

# the models llmforge's configs and docs name (its template's tested configs among them)
LLMFORGE_MODELS = [
    "meta-llama/Llama-2-7b-chat-hf",
    "meta-llama/Llama-2-13b-chat-hf",
    "meta-llama/Llama-2-70b-chat-hf",
    "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Meta-Llama-3-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Meta-Llama-Guard-2-8B",
    "meta-llama/Llama-Guard-3-8B",
    "mistralai/Mistral-7B-Instruct-v0.1",
    "mistralai/Mistral-7B-Instruct-v0.2",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "google/gemma-2-2b-it",
    "google/gemma-2-9b-it",
    "google/gemma-2-27b-it",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct",
]


@pytest.mark.parametrize("model_id", LLMFORGE_MODELS)
def test_every_model_llmforge_names_is_known(model_id):
    assert model_id in known_model_ids()


@pytest.mark.parametrize(
    ("model_id", "billions"),
    [
        # the parameter counts their publishers state: the registry's numbers describe the real weights
        ("meta-llama/Meta-Llama-Guard-2-8B", 8.03),
        ("meta-llama/Llama-Guard-3-8B", 8.03),
        ("mistralai/Mistral-7B-Instruct-v0.1", 7.24),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7),
        ("google/gemma-2-2b-it", 2.61),
        ("google/gemma-2-9b-it", 9.24),
        ("google/gemma-2-27b-it", 27.2),
    ],
)
def test_the_weights_of_each_new_model_add_up_to_its_published_size(model_id, billions):
    shapes = Architecture(model_id, known_architecture(model_id), "registry").tensor_shapes()
    assert sum(math.prod(s) for s in shapes.values()) / 1e9 == pytest.approx(billions, rel=0.005)


def test_gemma_2_ties_its_output_layer_and_has_four_norms_a_layer():
    shapes = Architecture(
        "google/gemma-2-9b-it", known_architecture("google/gemma-2-9b-it"), "registry"
    ).tensor_shapes()
    assert "lm_head.weight" not in shapes
    assert shapes["model.layers.41.pre_feedforward_layernorm.weight"] == (3584,)
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (16 * 256, 3584)  # head_dim 256, not 3584 / 16


def test_mixtral_weights_are_its_experts_as_published():
    shapes = Architecture(
        "mistralai/Mixtral-8x7B-v0.1", known_architecture("mistralai/Mixtral-8x7B-v0.1"), "registry"
    ).tensor_shapes()
    assert shapes["model.layers.31.block_sparse_moe.gate.weight"] == (8, 4096)
    assert shapes["model.layers.0.block_sparse_moe.experts.7.w2.weight"] == (4096, 14336)
    assert not any(".mlp." in name for name in shapes)


def test_mixtral_lora_targets_are_its_attention_and_router():
    arch = Architecture("m", known_architecture("mistralai/Mixtral-8x7B-Instruct-v0.1"), "registry")
    assert arch.leaf_names() == ["embed_tokens", "gate", "k_proj", "lm_head", "o_proj", "q_proj", "v_proj"]
    assert arch.unmatched_targets(["q_proj", "w1"]) == ["w1"]


GEMMA = known_architecture("google/gemma-2-9b-it")
MIXTRAL = known_architecture("mistralai/Mixtral-8x7B-Instruct-v0.1")


def test_a_config_as_published_has_no_mismatch():
    assert config_mismatches(dict(GEMMA), GEMMA) == []
    assert config_mismatches({k: v for k, v in GEMMA.items() if k != "tie_word_embeddings"}, GEMMA) == []
    assert config_mismatches(dict(MIXTRAL), MIXTRAL) == []


@pytest.mark.parametrize(
    ("published", "change", "found"),
    [
        (MIXTRAL, {"num_local_experts": 4}, ("num_local_experts", "num_local_experts = 4")),
        (MIXTRAL, {"num_experts_per_tok": 1}, ("num_experts_per_tok", "num_experts_per_tok = 1")),
        (MIXTRAL, {"num_local_experts": None}, ("num_local_experts", "no num_local_experts")),
        (GEMMA, {"final_logit_softcapping": None}, ("final_logit_softcapping", "no final_logit_softcapping")),
        (GEMMA, {"attn_logit_softcapping": 0.0}, ("attn_logit_softcapping", "attn_logit_softcapping = 0.0")),
        (GEMMA, {"tie_word_embeddings": False}, ("tie_word_embeddings", "tie_word_embeddings = False")),
        (GEMMA, {"query_pre_attn_scalar": 224}, ("query_pre_attn_scalar", "query_pre_attn_scalar = 224")),
    ],
)
def test_what_makes_a_family_itself_is_compared(published, change, found):
    config = {k: v for k, v in published.items() if not (k in change and change[k] is None)}
    config.update({k: v for k, v in change.items() if v is not None})
    assert config_mismatches(config, published) == [found]


def test_a_folder_of_another_family_is_told_by_its_model_type_not_every_family_field():
    llama = known_architecture("meta-llama/Meta-Llama-3-8B")
    assert [f for f, _ in config_mismatches(llama, GEMMA)] == [
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
    ]


def test_mixtrals_router_and_experts_are_reached_as_parameters_and_nothing_else_is():
    mixtral = Architecture("m", MIXTRAL, "registry")
    assert mixtral.adapted_as_parameters("all-linear") == [
        "mlp.gate.weight",
        "mlp.experts.gate_up_proj",
        "mlp.experts.down_proj",
    ]
    assert mixtral.adapted_as_parameters(["q_proj", "gate"]) == ["mlp.gate.weight"]
    assert mixtral.adapted_as_parameters(r".*\.mlp\.gate") == ["mlp.gate.weight"]
    assert mixtral.adapted_as_parameters(["q_proj", "v_proj"]) == mixtral.adapted_as_parameters("q_proj|v_proj") == []
    assert Architecture("g", GEMMA, "registry").adapted_as_parameters("all-linear") == []
