"""The typed RoPE scaling and its schema say the same, and a resolved scaling gives transformers what it reads."""

from __future__ import annotations

import dataclasses

from ftc.spec import job_schema
from ftc.spec.rope import RopeScaling, native_length


def test_rope_scaling_fields_match_the_schema():
    schema = job_schema()["$defs"]["rope_scaling"]
    assert {f.name for f in dataclasses.fields(RopeScaling)} == set(schema["properties"])


def test_config_fields_give_each_type_only_its_own_keys_and_dynamic_keeps_the_native_length():
    llama3 = RopeScaling("llama3", 8.0, 8192, 1.0, 4.0)
    assert llama3.config_fields() == {
        "rope": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                 "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        "max_position_embeddings": 65536,
    }  # fmt: skip
    dynamic = RopeScaling("dynamic", 2.0, 512)
    assert dynamic.config_fields() == {"rope": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 512}


def test_the_native_length_of_a_model_that_already_scales_rope_is_its_original_one():
    assert native_length({"max_position_embeddings": 4096}) == 4096
    linear = {"max_position_embeddings": 2048, "rope_parameters": {"rope_type": "linear", "factor": 4.0}}
    assert native_length(linear) == 512
    llama31 = {"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
               "original_max_position_embeddings": 8192}}  # fmt: skip
    assert native_length(llama31) == 8192
    assert native_length({"max_position_embeddings": 512, "rope_parameters": {"rope_type": "default"}}) == 512
