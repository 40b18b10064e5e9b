"""The schema documents itself, the reference page follows it, and the typed spec matches it field for field."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest

from ftc.spec import job_schema, plan_schema
from ftc.spec.docs import render_spec_reference
from ftc.spec.llmforge import LLMFORGE_KEYS
from ftc.spec.model import DeepSpeedSettings, EvalFrequency, GenerationConfig, JobSpec, LoraConfig, PromptFormat
from ftc.spec.schemas import _object_branch

from conftest import REPO


@pytest.mark.parametrize("schema", [job_schema(), plan_schema()], ids=["job", "plan"])
def test_schemas_are_valid_draft_2020_12(schema):
    jsonschema.Draft202012Validator.check_schema(schema)


def _properties(schema, root, at=""):
    obj = _object_branch(schema, root)
    if obj is None:
        return
    for key, sub in obj["properties"].items():
        yield f"{at}{key}", sub
        yield from _properties(sub, root, f"{at}{key}.")


def test_every_spec_property_has_a_description():
    root = job_schema()
    missing = [name for name, sub in _properties(root, root) if not sub.get("description")]
    assert missing == []


def test_reference_page_is_generated_from_the_schema():
    committed = (REPO / "docs" / "spec.md").read_text()
    assert committed == render_spec_reference(), "docs/spec.md is stale: run `ftc schema --markdown > docs/spec.md`"


@pytest.mark.parametrize(
    "cls, path",
    [
        (JobSpec, ()),
        (GenerationConfig, ("generation_config",)),
        (PromptFormat, ("generation_config", "prompt_format")),
        (LoraConfig, ("lora_config",)),
        (DeepSpeedSettings, ("deepspeed",)),
        (EvalFrequency, ("checkpoint_and_evaluation_frequency",)),
    ],
)
def test_typed_spec_classes_match_the_schema(cls, path):
    root = job_schema()
    schema = root
    for key in path:
        schema = _object_branch(schema, root)["properties"][key]
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields == set(_object_branch(schema, root)["properties"]) - LLMFORGE_KEYS  # those are normalized away


def test_seed_guide_keys_are_accepted_as_they_are():
    seed_keys = {
        "model_id",
        "initial_base_model_ckpt_path",
        "initial_adapter_model_ckpt_path",
        "train_path",
        "valid_path",
        "generation_config",
        "num_epochs",
        "learning_rate",
        "lr_scheduler_type",
        "num_warmup_steps",
        "train_batch_size_per_device",
        "eval_batch_size_per_device",
        "gradient_accumulation_steps",
        "context_length",
        "padding",
        "num_devices",
        "num_nodes",
        "lora_config",
        "deepspeed",
        "checkpoint_and_evaluation_frequency",
        "num_checkpoints_to_keep",
        "seed",
        "output_dir",
    }
    assert seed_keys <= set(job_schema()["properties"])
    prompt = job_schema()["$defs"]["prompt_format"]["properties"]
    assert {
        "system",
        "user",
        "assistant",
        "trailing_assistant",
        "bos",
        "system_in_user",
        "default_system_message",
        "add_system_tags_even_if_message_is_empty",
        "strip_whitespace",
    } == set(prompt)


def test_architecture_registry_covers_the_well_known_families():
    from ftc.spec.architectures import known_model_ids

    ids = " ".join(known_model_ids())
    for family in ("Llama-2", "Meta-Llama-3-", "Llama-3.1", "Llama-3.2", "Mistral", "Qwen2.5", "SmolLM2", "TinyLlama"):
        assert family in ids
    registry = json.loads((REPO / "spec" / "architectures.json").read_text())
    assert registry["meta-llama/Llama-3.2-1B"]["num_key_value_heads"] == 8
